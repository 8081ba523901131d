"""A read-mostly view of a GraphDef: nodes by name, consumers, constants."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple


def split_input(name: str) -> Tuple[str, int, bool]:
    """'node:1' -> ('node', 1, False); '^node' -> ('node', 0, True); 'node' -> ('node', 0, False)."""
    if name.startswith("^"):
        return name[1:], 0, True
    node, _, idx = name.partition(":")
    return node, int(idx) if idx else 0, False


def tensor_name(node: str, index: int) -> str:
    return node if index == 0 else f"{node}:{index}"


class GraphView:
    def __init__(self, graph_def):
        self.graph_def = graph_def
        self.nodes: Dict[str, object] = {n.name: n for n in graph_def.node}
        # consumers[node] = [(consumer node, input position, is_control)]
        self.consumers: Dict[str, List[Tuple[object, int, bool]]] = defaultdict(list)
        for n in graph_def.node:
            for i, inp in enumerate(n.input):
                src, _, control = split_input(inp)
                self.consumers[src].append((n, i, control))

    def input(self, node, i: int):
        """(producer node, output index) of data input i, or (None, 0)."""
        if i >= len(node.input):
            return None, 0
        src, idx, control = split_input(node.input[i])
        if control:
            return None, 0
        return self.nodes.get(src), idx

    def skip_identity(self, node, index: int = 0):
        """Follows Identity nodes back to the tensor they forward."""
        while node is not None and node.op == "Identity":
            node, index = self.input(node, 0)
        return node, index

    def const_value(self, node):
        """numpy value of a Const node, or None."""
        if node is None or node.op != "Const":
            return None
        from tensorflow.python.framework import tensor_util

        return tensor_util.MakeNdarray(node.attr["value"].tensor)

    def data_consumers(self, node_name: str) -> List[Tuple[object, int]]:
        return [(n, i) for n, i, control in self.consumers.get(node_name, []) if not control]
