"""Input-shape specifications: every form of seed 000's ``input_shapes`` and
seed 001's tensor-info lines, parsed by one parser into one structure.

Seed 000 (a list, one entry per input, in input order)::

    ['1*3*224*224']                                  one input, fixed size
    [['1*3*224*224'], ['1*3*512*512']]               several inputs, fixed sizes
    [{'seperate': ['1*3*224*224', '2*3*224*224']}]   discrete sizes ("separate" accepted too)
    [{'range': ['1*3*224*224', '10*3*224*224']}]     a size range [min, max]
    dtype, for inputs that are not float: the key 'int', 'float' or 'half'
    beside the size key ({'range': [...], 'int': True}), or joined to it
    ({'range,int': [...]}), or as the only key with a fixed size ({'int': '1*26'}).

Seed 001 (lines ``element:dtype(shape)``; a string with one line per element,
or a list of lines)::

    input_0:float(1*3*1024*1024)           fixed
    input_ids:int32(1*128,8*128)           range: min,max
    x:int32([1*4,2*4])                     discrete sizes
    input_0[0]:float(...)  input_0(1):...  inputs[key]:...   nested elements

``parse_input_shapes(spec)`` returns a list of :class:`InputShape`.
Malformed input raises :class:`ShapeSpecError` naming the bad part and, for
strings, its position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

# dtype names accepted in both seeds -> numpy dtype names.
DTYPES = {
    "float": "float32", "float32": "float32", "fp32": "float32", "half": "float16", "float16": "float16",
    "fp16": "float16", "float64": "float64", "double": "float64", "bfloat16": "bfloat16",
    "int": "int32", "int32": "int32", "int64": "int64", "long": "int64", "int16": "int16", "int8": "int8",
    "uint8": "uint8", "bool": "bool", "string": "string", "str": "string", "array.char": "string",
}
SEED0_DTYPE_KEYS = ("int", "float", "half")
SIZE_KEYS = {"range": "range", "seperate": "discrete", "separate": "discrete"}


class ShapeSpecError(ValueError):
    """A malformed input-shape specification; the message says what and where."""


@dataclass
class InputShape:
    """One input: its element name (None where the spec is positional), dtype
    (None: not given; the model's own is used), and sizes.

    kind "fixed": ``shapes == [shape]``; "range": ``[min, max]`` (every
    dimension between them); "discrete": the listed shapes."""

    name: Optional[str]
    dtype: Optional[str]
    kind: str
    shapes: List[Tuple[int, ...]] = field(default_factory=list)

    @property
    def min_shape(self) -> Tuple[int, ...]:
        return self.shapes[0] if self.kind != "discrete" else min(self.shapes)

    @property
    def max_shape(self) -> Tuple[int, ...]:
        return self.shapes[-1] if self.kind != "discrete" else max(self.shapes)

    def as_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "kind": self.kind, "shapes": [list(s) for s in self.shapes]}


def _dims(text: str, where: str, offset: int = 0) -> Tuple[int, ...]:
    """'1*3*224*224' -> (1, 3, 224, 224)."""
    if not text.strip():
        raise ShapeSpecError(f"{where}: empty size at position {offset}")
    dims = []
    pos = offset
    for part in text.split("*"):
        token = part.strip()
        if not re.fullmatch(r"\d+", token) or int(token) <= 0:
            raise ShapeSpecError(f"{where}: bad dimension {part!r} at position {pos} (sizes are positive integers "
                                 f"joined by '*', like 1*3*224*224)")
        dims.append(int(token))
        pos += len(part) + 1
    return tuple(dims)


def _dtype(name: str, where: str) -> str:
    key = name.strip().lower()
    if key not in DTYPES:
        raise ShapeSpecError(f"{where}: unknown dtype {name!r} (known: {', '.join(sorted(DTYPES))})")
    return DTYPES[key]


def _check_range(lo: Tuple[int, ...], hi: Tuple[int, ...], where: str):
    if len(lo) != len(hi):
        raise ShapeSpecError(f"{where}: range ends have different ranks: {lo} and {hi}")
    if any(a > b for a, b in zip(lo, hi)):
        raise ShapeSpecError(f"{where}: range minimum {lo} exceeds its maximum {hi} in some dimension")


def _check_discrete(shapes: Sequence[Tuple[int, ...]], where: str):
    if len(shapes) < 1:
        raise ShapeSpecError(f"{where}: a discrete size list needs at least one size")
    if len({len(s) for s in shapes}) != 1:
        raise ShapeSpecError(f"{where}: discrete sizes have different ranks: {list(shapes)}")


# ----------------------------------------------------------------- seed 001 lines

_LINE = re.compile(r"^\s*(?P<name>[^:\s][^:]*?)\s*:\s*(?P<dtype>[A-Za-z_][\w.]*)\s*\((?P<shape>.*)\)\s*$")
_ELEMENT = re.compile(r"^[A-Za-z_][\w.-]*(\[[^\[\]]+\]|\(\d+\))*$")


def _parse_line(line: str, index: int) -> InputShape:
    where = f"line {index + 1} {line.strip()!r}"
    m = _LINE.match(line)
    if not m:
        colon = line.find(":")
        if colon < 0:
            raise ShapeSpecError(f"{where}: expected 'element:dtype(shape)', no ':' found")
        if "(" not in line[colon:] or not line.rstrip().endswith(")"):
            raise ShapeSpecError(f"{where}: expected '(shape)' after the dtype at position {colon + 1}")
        raise ShapeSpecError(f"{where}: expected 'element:dtype(shape)'")
    name = m.group("name").strip()
    if not _ELEMENT.match(name):
        raise ShapeSpecError(f"{where}: bad element name {name!r} (input_0, a dict key, then [0], (0) or [key] "
                             "for nested elements)")
    dtype = _dtype(m.group("dtype"), where)
    shape = m.group("shape").strip()
    start = m.start("shape")
    if shape.startswith("["):
        if not shape.endswith("]"):
            raise ShapeSpecError(f"{where}: discrete size list at position {start} is not closed with ']'")
        items, pos, shapes = shape[1:-1].split(","), start + 1, []
        for it in items:
            shapes.append(_dims(it, where, pos))
            pos += len(it) + 1
        _check_discrete(shapes, where)
        return InputShape(name, dtype, "discrete", shapes)
    parts = shape.split(",")
    if len(parts) == 1:
        return InputShape(name, dtype, "fixed", [_dims(shape, where, start)])
    if len(parts) == 2:
        lo = _dims(parts[0], where, start)
        hi = _dims(parts[1], where, start + len(parts[0]) + 1)
        _check_range(lo, hi, where)
        return InputShape(name, dtype, "range", [lo, hi])
    raise ShapeSpecError(f"{where}: a range has two sizes 'min,max'; got {len(parts)} (a list of sizes is "
                         "written [a,b,...])")


def _is_line_spec(spec) -> bool:
    if isinstance(spec, str):
        return True
    return isinstance(spec, (list, tuple)) and bool(spec) and all(isinstance(x, str) for x in spec) \
        and all(":" in x for x in spec)


# ----------------------------------------------------------------- seed 000 list

def _parse_seed0_entry(entry, index: int) -> List[InputShape]:
    where = f"input_shapes[{index}]"
    if isinstance(entry, str):
        return [InputShape(None, None, "fixed", [_dims(entry, where)])]
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise ShapeSpecError(f"{where}: empty list")
        out = []
        for k, item in enumerate(entry):
            if not isinstance(item, str):
                raise ShapeSpecError(f"{where}[{k}]: expected a size string like '1*3*224*224', got "
                                     f"{type(item).__name__}")
            out.append(InputShape(None, None, "fixed", [_dims(item, f"{where}[{k}]")]))
        return out
    if isinstance(entry, dict):
        return [_parse_seed0_dict(entry, where)]
    raise ShapeSpecError(f"{where}: expected a size string, a list of them or a dict, got {type(entry).__name__}")


def _parse_seed0_dict(entry: dict, where: str) -> InputShape:
    dtype, kind, sizes = None, None, None
    for key, value in entry.items():
        if not isinstance(key, str):
            raise ShapeSpecError(f"{where}: dict keys are strings, got {key!r}")
        parts = [p.strip().lower() for p in key.split(",")]
        size_parts = [p for p in parts if p in SIZE_KEYS]
        type_parts = [p for p in parts if p in SEED0_DTYPE_KEYS or p == "dtype"]
        unknown = [p for p in parts if p not in SIZE_KEYS and p not in SEED0_DTYPE_KEYS and p != "dtype"]
        if unknown:
            raise ShapeSpecError(f"{where}: unknown key {unknown[0]!r} in {key!r} (keys: seperate/separate or "
                                 "range, and int/float/half)")
        if len(size_parts) > 1 or len(type_parts) > 1:
            raise ShapeSpecError(f"{where}: key {key!r} names two sizes or two dtypes")
        if type_parts:
            t = type_parts[0]
            if dtype is not None:
                raise ShapeSpecError(f"{where}: dtype given twice")
            dtype = _dtype(value if t == "dtype" else t, where)
            if t == "dtype" or (not size_parts and isinstance(value, bool)):
                continue
            if not size_parts:     # {'int': '1*26'}: a fixed size of that dtype
                if kind is not None:
                    raise ShapeSpecError(f"{where}: size given twice")
                kind, sizes = "fixed", value
                continue
        if size_parts:
            if kind is not None:
                raise ShapeSpecError(f"{where}: size given twice")
            kind, sizes = SIZE_KEYS[size_parts[0]], value
    if kind is None:
        raise ShapeSpecError(f"{where}: no size: give 'range': [min, max], 'seperate': [sizes...] or a fixed size")
    if kind == "fixed":
        if not isinstance(sizes, str):
            raise ShapeSpecError(f"{where}: a fixed size is a string like '1*26', got {sizes!r}")
        return InputShape(None, dtype, "fixed", [_dims(sizes, where)])
    if not isinstance(sizes, (list, tuple)) or not all(isinstance(s, str) for s in sizes):
        raise ShapeSpecError(f"{where}: {kind} sizes are a list of strings like ['1*3*224*224', ...], got {sizes!r}")
    shapes = [_dims(s, f"{where}[{k}]") for k, s in enumerate(sizes)]
    if kind == "range":
        if len(shapes) != 2:
            raise ShapeSpecError(f"{where}: 'range' takes [min, max], got {len(shapes)} sizes")
        _check_range(shapes[0], shapes[1], where)
    else:
        _check_discrete(shapes, where)
    return InputShape(None, dtype, kind, shapes)


def parse_input_shapes(spec) -> List[InputShape]:
    """Parses ``input_shapes`` in any form of seed 000 or 001 (see the module doc)."""
    if spec is None:
        raise ShapeSpecError("input_shapes is required: e.g. ['512*13', '512*26'] or 'dense:float(512*13)'")
    if _is_line_spec(spec):
        lines = spec.splitlines() if isinstance(spec, str) else list(spec)
        out = [_parse_line(line, k) for k, line in enumerate(lines) if line.strip()]
        if not out:
            raise ShapeSpecError("input_shapes has no lines")
        names = [s.name for s in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ShapeSpecError(f"input_shapes names {dup[0]!r} twice")
        return out
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ShapeSpecError(f"input_shapes must be a non-empty list (seed 000) or tensor-info lines (seed 001), "
                             f"got {spec!r}")
    out = []
    for k, entry in enumerate(spec):
        out.extend(_parse_seed0_entry(entry, k))
    return out
