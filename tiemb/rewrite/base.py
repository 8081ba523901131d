"""The small base classes every fusion pass builds on.

A pass recognises one idiom. An ``AnchorPass`` starts at a distinctive op
(``search_ops``: the reduction of a sparse lookup, a gather, a pooling sum)
and walks up its inputs; a ``WideningPass`` starts from a lookup an earlier
pass matched and widens it to the subgraph around it (the safe lookup around
an embedding_lookup_sparse). ``match`` / ``widen`` return a ``Lookup``, a
``Refused`` (the idiom is there but differs from what the op computes in a
checked detail: the reason goes to the report's ``left_alone``), or None
(not this idiom: nothing is reported).

Passes only read the graph. The driver (driver.py) runs them in order,
builds the fused op and splices it in once; there, a node a match lists as
removable goes only once nothing outside the replaced subgraphs reads it
(``splice.unused_candidates``), so a pattern never takes away a tensor that
other code uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Set

from .graph import GraphView
from .lookup import Lookup, RewriteReport


@dataclass(frozen=True)
class Refused:
    """A failed match: why, and at which node (None: the pass's start node)."""

    reason: str
    node: Optional[str] = None


class FusionPass:
    """State shared by the passes: the graph, the report, the option that enables the pass."""

    idiom = ""              # the report's name for what this pass matches
    option: Optional[str] = None   # name of the rewrite option that must be true for the pass to run

    def __init__(self, view: GraphView, report: RewriteReport):
        self.view = view
        self.report = report

    def leave(self, node: str, reason: str, idiom: Optional[str] = None) -> None:
        """Records a subgraph left (partly) as it was, and why."""
        self.report.left_alone.append({"node": node, "idiom": idiom or self.idiom, "reason": reason})


class AnchorPass(FusionPass):
    """A pass that starts at nodes of ``search_ops``, in graph order."""

    search_ops: tuple = ()

    def anchors(self) -> Iterator[object]:
        """The nodes matching starts at; a pass may order them otherwise."""
        return (n for n in self.view.graph_def.node if n.op in self.search_ops)

    def match(self, node):
        """Lookup, Refused or None for one anchor node."""
        raise NotImplementedError

    def run(self, matches: List[Lookup], claimed: Set[str]) -> List[Lookup]:
        """Adds this pass's lookups to ``matches``; anchors another match
        already replaces (``claimed``) are skipped. Every anchor that is this
        idiom (matched or refused) counts in ``report.found``."""
        for node in self.anchors():
            if node.name in claimed:
                continue
            m = self.match(node)
            if m is None:
                continue
            self.report.found += 1
            if isinstance(m, Refused):
                self.leave(m.node or node.name, m.reason)
                continue
            matches.append(m)
            claimed.update(m.removable)
        return matches


class WideningPass(FusionPass):
    """A pass that replaces a match by a wider one around it."""

    def widen(self, inner: Lookup):
        """The wider Lookup, Refused (``inner`` stays) or None (not this idiom)."""
        raise NotImplementedError

    def run(self, matches: List[Lookup], claimed: Set[str]) -> List[Lookup]:
        out = []
        for m in matches:
            wider = self.widen(m)
            if isinstance(wider, Refused):
                self.leave(wider.node or m.output, wider.reason)
                wider = None
            out.append(wider or m)
        claimed.update(name for m in out for name in m.removable)
        return out
