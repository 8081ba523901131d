"""Fusion of weighted ``tf.nn.embedding_lookup_sparse(..., sp_weights)``,
anchored at the root of its combiner (DivNoNan for mean and sqrtn, else the
SegmentSum); the rows are GatherV2(table, ids), or gathered through Unique
as in fusion_sparse.py; Cast to float32 and back for float16 tables::

    rows ─► Cast? ─► Mul(·, Reshape(weights, ...)) ─► SegmentSum(·, segment_ids) ─────────────► (sum)
                                                           └─► DivNoNan(·, SegmentSum(Reshape(w)))              ─► Cast? (mean)
                                                           └─► DivNoNan(·, Sqrt(SegmentSum(Pow(Reshape(w), 2)))) ─► Cast? (sqrtn)

For every row r up to max(segment_ids), the combiner over w[j] * table[ids[j]]
for the j with segment_ids[j] == r: TiembLookup's "plain" mode with weights.
Roots are tried DivNoNan first, so that the SegmentSum inside a mean is not
matched again as a sum.
"""

from __future__ import annotations

from .base import AnchorPass, Refused
from .graph import split_input
from .lookup import Lookup, SparsePart
from .subpatterns import valid_table

DT_FLOAT, DT_HALF = 1, 19


class WeightedSparseLookupFusion(AnchorPass):
    idiom = "embedding_lookup_sparse (weighted)"
    search_ops = ("DivNoNan", "SegmentSum")

    def anchors(self):
        for op in self.search_ops:      # roots first: a mean's SegmentSum is inside it
            yield from (n for n in self.view.graph_def.node if n.op == op)

    def match(self, root):
        view = self.view
        seg_sum, denom = (view.input(root, 0)[0], view.input(root, 1)[0]) if root.op == "DivNoNan" else (root, None)
        if seg_sum is None or seg_sum.op != "SegmentSum":
            return None
        mul, _ = view.input(seg_sum, 0)
        if mul is None or mul.op != "Mul":
            return None
        reshape, _ = view.input(mul, 1)
        if reshape is None or reshape.op != "Reshape":
            return None
        rows = self._gathered_rows(mul)
        if isinstance(rows, Refused):
            return rows
        table_node, ids, id_dtype, removable = rows
        removable += [seg_sum.name, mul.name, reshape.name]
        combiner = self._combiner(root, denom, seg_sum.input[1], reshape, removable)
        if isinstance(combiner, Refused):
            return combiner
        if reshape.attr["T"].type != DT_FLOAT:
            return Refused("the weights are not float32")
        table = valid_table(view, table_node)
        if table is None:
            return Refused("the table is not a 2-D float32/float16 constant")
        self._weight_shape_nodes(reshape, removable)
        output, half = root, False
        consumers = view.data_consumers(root.name)
        if table.dtype.name == "float16" and len(consumers) == 1 and consumers[0][0].op == "Cast" \
                and consumers[0][0].attr["DstT"].type == DT_HALF:   # TF casts back to the table dtype
            removable.append(root.name)
            output, half = consumers[0][0], True
        removable.append(table_node.name)
        return Lookup(output=output.name, combiner=combiner, table_node=table_node.name, table=table, ids=ids,
                      segment_ids=seg_sum.input[1], id_dtype=id_dtype, seg_dtype=seg_sum.attr["Tindices"].type,
                      removable=removable, weights=reshape.input[0], part=SparsePart(half_output=half))

    def _combiner(self, root, denom, seg, reshape, removable):
        """sum, mean or sqrtn from the root and its denominator; Refused for another division."""
        if root.op != "DivNoNan":
            return "sum"
        if self._weight_sum(denom, seg, reshape, False, removable):
            return "mean"
        if denom is not None and denom.op == "Sqrt" \
                and self._weight_sum(self.view.input(denom, 0)[0], seg, reshape, True, removable):
            removable.append(denom.name)
            return "sqrtn"
        return Refused("DivNoNan over a weighted sum that is not a mean or sqrtn of the same weights")

    def _weight_sum(self, n, seg, reshape, squared, removable) -> bool:
        """n is SegmentSum(Reshape(w)) (or of Pow(Reshape(w), 2)) over the same segments."""
        if n is None or n.op != "SegmentSum" or n.input[1] != seg:
            return False
        x, _ = self.view.input(n, 0)
        if squared:
            if x is None or x.op != "Pow":
                return False
            exponent = self.view.const_value(self.view.input(x, 1)[0])
            if exponent is None or float(exponent) != 2.0:
                return False
            removable.append(x.name)
            x, _ = self.view.input(x, 0)
        removable.append(n.name)
        return x is not None and x.name == reshape.name

    def _weight_shape_nodes(self, reshape, removable) -> None:
        """The shape arithmetic that broadcasts the weights goes too, if nothing else uses it."""
        stack = [reshape.input[1]]
        while stack:
            n = self.view.nodes.get(split_input(stack.pop())[0])
            if n is not None and n.op not in ("Placeholder", "Const") and n.name not in removable:
                removable.append(n.name)
                stack.extend(n.input)

    def _gathered_rows(self, mul):
        """(table node, ids, id dtype, [nodes]) for the rows a weighted lookup
        multiplies: GatherV2(table, ids) or GatherV2(GatherV2(table, Unique.y),
        Unique.idx), maybe through Cast / Identity; else Refused."""
        view = self.view
        removable = []
        n, _ = view.input(mul, 0)
        while n is not None and n.op in ("Cast", "Identity"):
            removable.append(n.name)
            n, _ = view.input(n, 0)
        if n is None or n.op not in ("GatherV2", "ResourceGather"):
            return Refused("the weighted rows are not gathered from a table")
        removable.append(n.name)
        idx_node, idx_out = view.input(n, 1)
        gather = view.row_gather(n)
        if not isinstance(gather, str):            # rows gathered straight from the table
            table, chain, ids, id_dtype = gather
            return table, ids, id_dtype, removable + chain
        source, _ = view.skip_identity(*view.input(n, 0))
        inner = view.row_gather(source)
        if inner is None or isinstance(inner, str):
            return Refused(inner or "the weighted rows do not come from a table")
        table, chain, _, _ = inner
        unique, uy = view.input(source, 1)
        if unique is None or unique.op != "Unique" or uy != 0 or idx_node is None or idx_node.name != unique.name \
                or idx_out != 1:
            return Refused("the rows are not gathered through Unique(ids)")
        n2, _ = view.input(n, 0)
        while n2 is not None and n2.op == "Identity":
            removable.append(n2.name)
            n2, _ = view.input(n2, 0)
        return table, unique.input[0], unique.attr["T"].type, removable + chain + [source.name, unique.name]
