"""Splicing the fused ops into a copy of the graph: readers of a replaced
output read the op instead, and what the replaced outputs were computed from
goes once nothing else reads it.

The safety rule of every pass lives here: a node a match lists as removable
(or any node a replaced output depends on) is removed only when no kept node
reads it (``unused_candidates``), so a pattern never takes away a tensor the
rest of the model uses, and graph inputs always stay.
"""

from __future__ import annotations

from typing import Dict, List, Set

from .graph import GraphView, split_input

PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault")


def splice(graph_def, view: GraphView, matches: list, ops: list, new_nodes: list, op_of: Dict[str, str],
           rename: Dict[str, str]):
    """A copy of ``graph_def`` with ``new_nodes`` (the ops among them) added,
    the replaced outputs (``rename``: output node -> op output) rewired, and
    every node that became unused and that a match replaced removed."""
    from tensorflow.core.framework import graph_pb2

    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        for i, inp in enumerate(node.input):
            src, idx, control = split_input(inp)
            if not control and src in rename and idx == 0:
                node.input[i] = rename[src]
    removed = set(op_of)
    kept = [nd for nd in out.node if nd.name not in removed]
    kept, dropped = unused_candidates(kept, new_nodes, _candidates(view, matches))
    removed |= dropped
    _move_control_edges(graph_def, kept + ops, removed, op_of, ops[0].name)
    del out.node[:]
    out.node.extend(kept + new_nodes)
    return out


def _candidates(view: GraphView, matches: list) -> Set[str]:
    """What the matches list as removable, and everything a replaced output
    was computed from, except graph inputs."""
    candidates = {name for m in matches for name in m.removable}
    stack, seen = [m.output for m in matches], set()
    while stack:
        n = view.nodes.get(stack.pop())
        if n is None or n.name in seen or n.op in PLACEHOLDERS:
            continue
        seen.add(n.name)
        stack.extend(split_input(i)[0] for i in n.input if not i.startswith("^"))
    return candidates | seen


def unused_candidates(kept: list, new_nodes: list, candidates: Set[str]):
    """(nodes left, names removed): candidates are removed, repeatedly, while
    no data input of a remaining or new node reads them; a candidate still
    read (a Unique whose ids feed other code, a shape another layer uses) stays."""
    removed: Set[str] = set()
    while True:
        used = {split_input(i)[0] for nd in kept + new_nodes for i in nd.input if not i.startswith("^")}
        drop = {nd.name for nd in kept if nd.name in candidates and nd.name not in used}
        if not drop:
            return kept, removed
        removed |= drop
        kept = [nd for nd in kept if nd.name not in drop]


def _move_control_edges(graph_def, nodes: List, removed: Set[str], op_of: Dict[str, str], first_op: str) -> None:
    """Control edges onto a removed node now wait for the op that replaced it;
    those out of a removed node (an Assert guarding the ids, say) the op takes
    over, so nothing that used to run is skipped. Edits ``nodes`` in place."""
    owner = {name: op_of.get(name, first_op) for name in removed}
    inherited: Dict[str, List[str]] = {}
    for nd in graph_def.node:
        if nd.name in removed:
            for inp in nd.input:
                src = split_input(inp)[0]
                if inp.startswith("^") and src not in removed:
                    inherited.setdefault(owner[nd.name], []).append("^" + src)
    for nd in nodes:
        inputs = [("^" + owner[split_input(i)[0]]) if i.startswith("^") and split_input(i)[0] in removed else i
                  for i in nd.input] + inherited.get(nd.name, [])
        seen, unique = set(), []
        for i in inputs:   # several control edges may now name the same node: keep one
            if i.startswith("^") and (i in seen or i[1:] == nd.name):
                continue
            seen.add(i)
            unique.append(i)
        del nd.input[:]
        nd.input.extend(unique)
