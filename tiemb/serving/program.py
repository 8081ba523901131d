"""One program per batch bucket: the lookups as XLA custom calls, then the
dense module, compiled together (StableHLO text; jax's binding is in xla.py).

::

    func.func public @main(<model inputs at the bucket>, <weights>) -> <model outputs> {
      %l0:K = stablehlo.custom_call @tiemb_lookup(<op 0's operands>)
                {backend_config = "", mhlo.backend_config = {handle = H0 : i64}} : ... -> <op 0's outputs>
      ...
      %r:M = func.call @tiemb_dense(<dense inputs>, <lookup outputs it reads>, <weights>)
      return %r#0, ...
    }

A dictionary ``mhlo.backend_config`` is how StableHLO spells XLA's typed FFI
call (custom call API version 4), exactly as ``jax.ffi.ffi_call`` lowers it;
its entries are the handler's attributes. The handle names the lookup plan (tiemb._C.XlaLookupPlan: the op's group
on the engine and where each slot reads and writes), so the program is
composed where it runs, after the plans exist.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from . import xla
from .format import BundleError

DENSE = "tiemb_dense"

_MLIR_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64", "int32": "i32",
               "int64": "i64", "int8": "i8", "int16": "i16", "uint8": "ui8", "uint32": "ui32", "uint64": "ui64",
               "bool": "i1"}


def tensor_type(shape: Sequence[int], dtype: str) -> str:
    """MLIR's spelling of a static tensor type: tensor<4x13xf32>."""
    if dtype not in _MLIR_TYPES:
        raise BundleError(f"dtype {dtype} has no StableHLO type here")
    return "tensor<" + "".join(f"{int(d)}x" for d in shape) + _MLIR_TYPES[dtype] + ">"


def input_shape(spec: dict, bucket: int, max_nnz: int) -> List[int]:
    """An input's shape in the bucket's program: the batch is the bucket; a
    SparseTensor piece holds up to bucket * max_nnz entries (padded)."""
    first = bucket * max_nnz if spec.get("capacity") else bucket
    return [first if i == 0 and d == -1 else d for i, d in enumerate(spec["shape"])]


def operand_key(source: dict) -> str:
    """The name of a lookup operand: the model input, or for a ``masked``
    source "<input>!=<ignore>" (computed in the program before the call)."""
    return source["input"] if source["kind"] != "masked" else f"{source['input']}!={source['ignore']}"


def _operand_input(key: str) -> str:
    return key.split("!=")[0]


def program_inputs(meta: dict) -> List[str]:
    """The model inputs the program takes, in order: the dense module's,
    then those only the lookups read."""
    names = list(meta["dense"]["inputs"])
    for op in meta["ops"]:
        names += [_operand_input(k) for k in op["operands"] if _operand_input(k) not in names]
    return list(dict.fromkeys(names))


def _masked(lines: List[str], value: Dict[str, str], types: Dict[str, str], ops: list) -> None:
    """Values of ``masked`` operands: where(x != ignore, x, -1), so that the
    pooled slot prunes the padding (Keras masked pooling's select)."""
    for op in ops:
        for key in op["operands"]:
            if key in value:
                continue
            x, ignore = _operand_input(key), int(key.split("!=")[1])
            t, k = types[x], len(value)
            pred = t[:t.rfind("x") + 1] + "i1>" if "x" in t else "tensor<i1>"
            lines.append(f"    %mc{k} = stablehlo.constant dense<{ignore}> : {t}")
            lines.append(f"    %mn{k} = stablehlo.constant dense<-1> : {t}")
            lines.append(f"    %mp{k} = \"stablehlo.compare\"({value[x]}, %mc{k}) <{{comparison_direction = "
                         f"#stablehlo<comparison_direction NE>, compare_type = #stablehlo<comparison_type SIGNED>}}> "
                         f": ({t}, {t}) -> {pred}")
            lines.append(f"    %mv{k} = \"stablehlo.select\"(%mp{k}, {value[x]}, %mn{k}) : ({pred}, {t}, {t}) -> {t}")
            value[key], types[key] = f"%mv{k}", t


def _output_shape(out: dict, bucket: int, spill: bool) -> List[int]:
    """A lookup output's shape at ``bucket``; with ``spill``, the custom
    call's (twice the rows where the output takes padded SparseTensor pieces)."""
    rows = bucket * 2 if spill and out.get("spill") else bucket
    return [rows if d == -1 else d for d in out["shape"]]


def _values(name: str, count: int) -> List[str]:
    return [name] if count == 1 else [f"{name}#{k}" for k in range(count)]


def _result(name: str, count: int) -> str:
    return name if count == 1 else f"{name}:{count}"


def compose(dense_text: str, meta: dict, bucket: int, handles: Sequence[int], lookups_only: bool = False,
            target: str = xla.LOOKUP_TARGET) -> str:
    """The program of ``bucket``: ``dense_text`` (the bucket's dense module)
    called on the outputs of one custom call per lookup op (``handles[i]``
    serves op i). ``lookups_only``: a program of the model inputs alone
    that returns every lookup output instead (the floor in benchmarks
    takes them as inputs). ``target``: the custom call's target,
    ``xla.LOOKUP_TARGET`` or ``xla.LOOKUP_TARGET_CMDBUF`` (the GPU handler
    XLA may keep inside the program's CUDA graph).

    Raises ValueError when ``dense_text`` does not parse, BundleError when
    its signature does not match what the bundle's wiring says it takes."""
    dense_body, dense_args, dense_results = xla.rename_main(dense_text, DENSE)   # ValueError: it does not parse
    names = program_inputs(meta)
    max_nnz = meta["engine"]["max_nnz"]
    types = {n: tensor_type(input_shape(meta["inputs"][n], bucket, max_nnz), meta["inputs"][n]["dtype"])
             for n in names}
    n_weights = len(meta["dense"]["weights"])
    weight_types = dense_args[len(dense_args) - n_weights:] if n_weights else []
    args = [f"%in{k}: {types[n]}" for k, n in enumerate(names)]
    if not lookups_only:
        args += [f"%w{k}: {t}" for k, t in enumerate(weight_types)]
    value = {n: f"%in{k}" for k, n in enumerate(names)}
    lines, flat, flat_types = [], [], []
    _masked(lines, value, types, meta["ops"])
    for i, (op, handle) in enumerate(zip(meta["ops"], handles)):
        outs = [tensor_type(_output_shape(o, bucket, spill=True), o["dtype"]) for o in op["outputs"]]
        operands = op["operands"]
        lines.append(f"    {_result(f'%l{i}', len(outs))} = stablehlo.custom_call @{target}("
                     f"{', '.join(value[n] for n in operands)}) {{backend_config = \"\", "
                     f"mhlo.backend_config = {{handle = {int(handle)} : i64}}}} : "
                     f"({', '.join(types[n] for n in operands)}) -> ({', '.join(outs)})")
        for k, (v, o) in enumerate(zip(_values(f"%l{i}", len(outs)), op["outputs"])):
            shape = _output_shape(o, bucket, spill=False)
            if o.get("spill"):     # the padding's rows after the bucket's, cut off
                lines.append(f"    %s{i}_{k} = \"stablehlo.slice\"({v}) <{{start_indices = array<i64: "
                             f"{', '.join('0' for _ in shape)}>, limit_indices = array<i64: "
                             f"{', '.join(str(d) for d in shape)}>, strides = array<i64: "
                             f"{', '.join('1' for _ in shape)}>}}> : ({outs[k]}) -> "
                             f"{tensor_type(shape, o['dtype'])}")
                v = f"%s{i}_{k}"
            flat.append(v)
            flat_types.append(tensor_type(shape, o["dtype"]))
    if lookups_only:
        results = flat_types
        lines.append(f"    return {', '.join(flat)} : {', '.join(flat_types)}")
    else:
        call_args = [value[n] for n in meta["dense"]["inputs"]] + [flat[i] for i in meta["dense"]["lookups"]] + \
            [f"%w{k}" for k in range(n_weights)]
        call_types = [types[n] for n in meta["dense"]["inputs"]] + \
            [flat_types[i] for i in meta["dense"]["lookups"]] + weight_types
        _check_signature(bucket, call_types, dense_args)
        results = dense_results
        lines.append(f"    {_result('%r', len(results))} = func.call @{DENSE}({', '.join(call_args)}) : "
                     f"({', '.join(call_types)}) -> ({', '.join(results)})")
        lines.append(f"    return {', '.join(_values('%r', len(results)))} : {', '.join(results)}")
    main = (f"  func.func public @main({', '.join(args)}) -> ({', '.join(results)}) {{\n" + "\n".join(lines) +
            "\n  }\n")
    end = dense_body.rstrip().rfind("}")
    return dense_body[:end] + main + "}\n"


def _check_signature(bucket: int, wired: List[str], dense_args: List[str]) -> None:
    if len(wired) != len(dense_args):
        raise BundleError(f"the dense module of batch {bucket} takes {len(dense_args)} arguments; the bundle's "
                          f"wiring gives {len(wired)}: the bundle is corrupt, export it again")
    for k, (got, want) in enumerate(zip(wired, dense_args)):
        if got != want:
            raise BundleError(f"the dense module of batch {bucket} takes {want} as argument {k}; the bundle's "
                              f"wiring gives {got}: the bundle is corrupt, export it again")


def handles_of(plans: Dict[str, object], meta: dict) -> List[int]:
    return [plans[op["name"]].handle for op in meta["ops"]]
