"""Optimization level 1 on the dense part: float32 matrix products in bfloat16.

Every float32 ``MatMul`` / ``BatchMatMulV2`` becomes::

    Cast(a, bf16), Cast(b, bf16) (constant operands are converted once, here)
      ─► MatMul[T=bfloat16] ─► Cast(float32)

under the original node's name, so consumers are untouched. On CPUs with
AVX512-BF16/AMX, oneDNN runs these at twice the float32 rate or more; bias
adds, activations and everything else stay float32 (the same split as
TensorFlow's ``auto_mixed_precision_onednn_bfloat16``, but written into the
saved graph instead of being a process-wide serving option). Accumulation in
oneDNN's bf16 matmul is float32; the inputs lose mantissa bits, so outputs
move by ~1e-2 relative: level 1 reports the measured difference.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

MATMULS = ("MatMul", "BatchMatMulV2")


def matmuls_to_bf16(graph_def) -> Tuple[object, int]:
    """A copy of ``graph_def`` with its float32 matmuls in bfloat16; and how many were converted."""
    from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2
    from tensorflow.python.framework import tensor_util

    from .graph import GraphView, split_input

    view = GraphView(graph_def)
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    del out.node[:]
    converted = 0
    const_bf16 = {}    # float32 Const name -> its bfloat16 copy
    for node in graph_def.node:
        if node.op not in MATMULS or node.attr["T"].type != types_pb2.DT_FLOAT:
            out.node.append(node)
            continue
        converted += 1
        inner = node_def_pb2.NodeDef()
        inner.CopyFrom(node)
        inner.name = f"{node.name}/bf16"
        inner.attr["T"].type = types_pb2.DT_BFLOAT16
        data_inputs = [i for i in node.input if not i.startswith("^")]
        for k, inp in enumerate(data_inputs):
            src, idx, _ = split_input(inp)
            value = view.const_value(view.nodes.get(src)) if idx == 0 else None
            if value is not None and src not in const_bf16:
                c = node_def_pb2.NodeDef(name=f"{src}/bf16", op="Const")
                c.attr["dtype"].type = types_pb2.DT_BFLOAT16
                c.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(
                    value.astype(np.float32), dtype=types_pb2.DT_BFLOAT16))
                out.node.append(c)
                const_bf16[src] = c.name
            if value is not None:
                inner.input[k] = const_bf16[src]
                continue
            cast = node_def_pb2.NodeDef(name=f"{node.name}/bf16_in{k}", op="Cast", input=[inp])
            cast.attr["SrcT"].type, cast.attr["DstT"].type = types_pb2.DT_FLOAT, types_pb2.DT_BFLOAT16
            out.node.append(cast)
            inner.input[k] = cast.name
        out.node.append(inner)
        back = node_def_pb2.NodeDef(name=node.name, op="Cast", input=[inner.name])
        back.attr["SrcT"].type, back.attr["DstT"].type = types_pb2.DT_BFLOAT16, types_pb2.DT_FLOAT
        out.node.append(back)
    # float32 constants only the matmuls read are no longer needed.
    used = {split_input(i)[0] for n in out.node for i in n.input}
    kept = [n for n in out.node if n.name not in const_bf16 or n.name in used]
    del out.node[:]
    out.node.extend(kept)
    return out, converted
