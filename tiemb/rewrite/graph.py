"""The rewriter's shared graph helpers: a read-mostly view of a GraphDef
(nodes by name, consumers, constants, tables) and the NodeDef builders the
passes and the driver share. Imports nothing else from tiemb.rewrite, so
every pass may import it without a cycle."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np


def split_input(name: str) -> Tuple[str, int, bool]:
    """'node:1' -> ('node', 1, False); '^node' -> ('node', 0, True); 'node' -> ('node', 0, False)."""
    if name.startswith("^"):
        return name[1:], 0, True
    node, _, idx = name.partition(":")
    return node, int(idx) if idx else 0, False


def tensor_name(node: str, index: int) -> str:
    return node if index == 0 else f"{node}:{index}"


def canon(t: str) -> str:
    """An input string as a tensor name: 'x:0' and 'x' alike become 'x'."""
    node, idx, _ = split_input(t)
    return tensor_name(node, idx)


class GraphView:
    def __init__(self, graph_def, resources: Optional[Dict[str, object]] = None):
        self.graph_def = graph_def
        # Tables left as variables (too big to freeze into a GraphDef): resource
        # placeholder name -> numpy value.
        self.resources = resources or {}
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

    def producer(self, tensor: str):
        """(node, output index) of a tensor name ('node:1'); node is None when absent."""
        node, idx, _ = split_input(tensor)
        return self.nodes.get(node), idx

    def const_equals(self, tensor: str, value) -> bool:
        """The tensor is a Const whose values equal ``value`` (shapes flattened)."""
        v = self.const_value(self.producer(tensor)[0])
        return v is not None and np.array_equal(np.asarray(v).reshape(-1), np.asarray(value).reshape(-1))

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

    def table_source(self, node):
        """(table node, [nodes forwarding it]) for a tensor that is a table:
        Identity* of a Const, or Identity/ReadVariableOp* of a big variable's
        resource placeholder; (node, chain) as far as it got otherwise."""
        chain = []
        while node is not None and node.op in ("Identity", "ReadVariableOp"):
            chain.append(node.name)
            node, _ = self.input(node, 0)
        return node, chain

    def table_value(self, node):
        """numpy value of a table: a Const, or a resource placeholder of a big variable; else None."""
        node, _ = self.table_source(node)
        if node is not None and node.op == "Placeholder" and node.name in self.resources:
            return self.resources[node.name]
        return self.const_value(node)

    def row_gather(self, node):
        """For a gather of rows from a table (GatherV2(Identity*(table), ids, axis 0)
        or ResourceGather(variable, ids)): (table node, [Identity nodes], ids tensor,
        id dtype); None when node is no gather, a reason string when it is a gather
        of something else."""
        if node is None or node.op not in ("GatherV2", "ResourceGather"):
            return None
        table, chain = self.table_source(self.input(node, 0)[0])
        big = table is not None and table.op == "Placeholder" and table.name in self.resources
        if node.op == "ResourceGather" and not big:
            return "the gathered variable is not a table tiemb read from the model"
        if node.op == "GatherV2" and not big and (table is None or table.op != "Const"):
            return "the gathered table is not a constant (freeze the model's variables first)"
        if node.attr["batch_dims"].i != 0:
            return "the gather has batch dimensions"
        if node.op == "GatherV2":
            axis = self.const_value(self.input(node, 2)[0])
            if axis is None or int(axis) != 0:
                return "the gather is not along axis 0"
        return table, chain, node.input[1], node.attr["Tindices"].type

    def data_consumers(self, node_name: str) -> List[Tuple[object, int]]:
        return [(n, i) for n, i, control in self.consumers.get(node_name, []) if not control]

    def through_identity(self, t: str) -> str:
        """The tensor ``t`` forwards through Identity nodes, canonical."""
        node, idx = self.skip_identity(*self.producer(t))
        return tensor_name(node.name, idx) if node is not None else canon(t)


def const_node(name: str, value: np.ndarray):
    """A Const NodeDef holding ``value`` (object arrays become strings)."""
    from tensorflow.core.framework import node_def_pb2
    from tensorflow.python.framework import dtypes, tensor_util

    n = node_def_pb2.NodeDef(name=name, op="Const")
    n.attr["dtype"].type = (dtypes.string if value.dtype == object else dtypes.as_dtype(value.dtype)).as_datatype_enum
    n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
    return n


def attr_values(**kw) -> dict:
    """AttrValues from Python values: ``("types", [enum...])`` a type list,
    a list of bools / ints / strings the matching list, an int ``i``."""
    from tensorflow.core.framework import attr_value_pb2

    out = {}
    for k, v in kw.items():
        a = attr_value_pb2.AttrValue()
        if isinstance(v, tuple) and v[0] == "types":
            a.list.type.extend(v[1])
        elif isinstance(v, list) and v and isinstance(v[0], bool):
            a.list.b.extend(v)
        elif isinstance(v, int):
            a.i = v
        elif isinstance(v, list) and v and isinstance(v[0], int):
            a.list.i.extend(v)
        elif isinstance(v, list):
            a.list.s.extend(s.encode() for s in v)
        out[k] = a
    return out
