"""FLOPs and bytes of each instruction of a compiled XLA program, by its op_name.

`instruction_costs(hlo_text)` reads the optimised HLO text of a compiled program
(`compiled.as_text()`) and gives every instruction that does work an (op_name, flops, bytes)
row, with the rules of XLA's HloCostAnalysis (the one behind `compiled.cost_analysis()`):
  - flops: convolution 2 x output elements x (valid kernel taps x input features per group),
    counting only the taps that fall inside the padded, dilated input as XLA does; dot
    2 x output elements x contracted size; reduce (input - output elements) x the ops of its
    reducer; any other arithmetic op (add, multiply, compare, select, convert, ...) one per
    output element; exp, log, power, rsqrt, tanh, ... are transcendentals, not flops.
    Inside a fusion every fused instruction counts under its own op_name.
  - bytes: every instruction that runs as its own kernel (a fusion, a convolution, a copy)
    reads each operand once and writes its output: operand bytes + output bytes, under the
    instruction's op_name. Free instructions (parameter, tuple, get-tuple-element, bitcast,
    constant) move nothing.
  - while loops, calls, conditionals and async wrappers count their bodies once, as XLA's
    analysis does.
  - on GPUs, convolutions and matrix products are custom-calls into cuDNN and cuBLAS: they
    count as the convolution or dot they stand for, and their scratch output is not traffic.
  - an instruction the compiler made without op_name metadata (on CPU, convolutions it
    rewrites, casts of parameters) takes the op_name found along its largest operand, else
    of its nearest named operand or user; inside a fusion, the fusion's.

These rules do not reproduce XLA's totals to the last byte (it knows, for instance, that a
fused slice reads only part of its operand), so callers report the walk's total next to
cost_analysis()'s and take only shares from the walk.
"""
from __future__ import annotations

import dataclasses
import math
import re

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
                "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1, "token": 0}
_TRANSCENDENTAL = {"exponential", "exponential-minus-one", "log", "log-plus-one", "power",
                   "sqrt", "rsqrt", "cbrt", "tanh", "sine", "cosine", "tan", "logistic",
                   "atan2", "erf"}
# No arithmetic: data movement, layout, control.
_NO_FLOPS = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "reshape",
             "broadcast", "transpose", "copy", "copy-start", "copy-done", "slice",
             "dynamic-slice", "dynamic-update-slice", "concatenate", "pad", "iota", "gather",
             "scatter", "reverse", "rng-bit-generator", "rng", "custom-call", "after-all",
             "partition-id", "replica-id", "optimization-barrier", "bitcast-convert",
             "all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter",
             "get-dimension-size", "domain", "infeed", "outfeed", "send", "recv", "send-done",
             "recv-done", "sort", "while", "call", "conditional", "fusion", "add-dependency",
             "async-start", "async-update", "async-done"}
_FREE_BYTES = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
               "add-dependency", "while", "call", "conditional", "domain", "partition-id",
               "replica-id", "optimization-barrier", "async-start", "async-update", "async-done"}
# Instructions whose called computations run as part of the program (walked, counted once).
_CONTROL = {"while", "call", "conditional", "async-start"}

_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\) -> .*\{\s*$")
_ARRAY = re.compile(r"([a-z]+\d*[a-z0-9]*)\[([\d,]*)\]")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition|branch_computations)=\{?([%\w.\-, ]+)\}?")


@dataclasses.dataclass(frozen=True)
class Shape:
  """An array (dtype, dims) or a tuple of them (dtype "tuple", parts)."""
  dtype: str
  dims: tuple[int, ...] = ()
  parts: tuple[Shape, ...] = ()

  @property
  def elements(self) -> int:
    return math.prod(self.dims)

  @property
  def bytes(self) -> int:
    if self.dtype == "tuple":
      return sum(p.bytes for p in self.parts)
    return self.elements * _DTYPE_BYTES.get(self.dtype, 4)


@dataclasses.dataclass
class Instruction:
  name: str
  shape: Shape
  opcode: str
  operands: list[str]
  attributes: str
  op_name: str


@dataclasses.dataclass
class Cost:
  op_name: str
  opcode: str
  flops: float
  bytes: float


def _closing(text: str, start: int) -> int:
  """Index just past the bracket that closes the one at text[start]."""
  pairs = {"(": ")", "{": "}", "[": "]"}
  stack = [pairs[text[start]]]
  i = start + 1
  while stack:
    ch = text[i]
    if ch in pairs:
      stack.append(pairs[ch])
    elif ch == stack[-1]:
      stack.pop()
    elif ch == '"':
      i = text.index('"', i + 1)
    i += 1
  return i


def parse_shape(text: str) -> Shape:
  text = text.strip()
  if text.startswith("("):
    inner, parts, depth, start = text[1:_closing(text, 0) - 1], [], 0, 0
    for i, ch in enumerate(inner + ","):
      if ch in "([{":
        depth += 1
      elif ch in ")]}":
        depth -= 1
      elif ch == "," and depth == 0:
        if inner[start:i].strip():
          parts.append(parse_shape(inner[start:i].split("*/")[-1]))
        start = i + 1
    return Shape("tuple", parts=tuple(parts))
  match = _ARRAY.match(text)
  if not match:
    return Shape(text.split("[")[0] or "token")
  dims = tuple(int(d) for d in match.group(2).split(",") if d)
  return Shape(match.group(1), dims)


def _parse_instruction(line: str) -> Instruction | None:
  line = line.strip()
  if line.startswith("ROOT "):
    line = line[5:]
  if " = " not in line or not line.startswith("%"):
    return None
  name, rest = line[1:].split(" = ", 1)
  if rest.startswith("("):
    end = _closing(rest, 0)
  else:
    end = rest.index(" ")
  shape = parse_shape(rest[:end])
  rest = rest[end:].lstrip()
  paren = rest.index("(")
  opcode = rest[:paren]
  close = _closing(rest, paren)
  operands = re.findall(r"%([\w.\-]+)", rest[paren:close])
  attributes = rest[close:]
  op_name = re.search(r'op_name="([^"]*)"', attributes)
  return Instruction(name, shape, opcode, operands, attributes,
                     op_name.group(1) if op_name else "")


def parse_module(hlo_text: str) -> tuple[dict[str, list[Instruction]], str]:
  """(computation name -> its instructions, name of the entry computation)."""
  computations, entry, current = {}, "", None
  for line in hlo_text.splitlines():
    header = _HEADER.match(line)
    if header:
      current = computations.setdefault(header.group(2), [])
      if header.group(1):
        entry = header.group(2)
    elif line.startswith("}"):
      current = None
    elif current is not None:
      instruction = _parse_instruction(line)
      if instruction is not None:
        current.append(instruction)
  return computations, entry


def _called(instruction: Instruction) -> list[str]:
  names = []
  for group in _CALLS.findall(instruction.attributes):
    names += [n.strip().lstrip("%") for n in group.split(",") if n.strip()]
  return names


def _valid_taps(in_size, out_size, k, stride, pad_low, lhs_dilation, rhs_dilation) -> int:
  """Pairs (output position, kernel tap) of one spatial dimension that read a real input
  element (not padding, not a hole of lhs dilation): XLA counts only these."""
  total = 0
  dilated_in = (in_size - 1) * lhs_dilation + 1
  for o in range(out_size):
    for t in range(k):
      position = o * stride + t * rhs_dilation - pad_low
      if 0 <= position < dilated_in and position % lhs_dilation == 0:
        total += 1
  return total


def _window(attributes: str) -> dict[str, list[int]]:
  match = re.search(r"window=\{([^}]*)\}", attributes)
  fields = {}
  for item in (match.group(1).split() if match else []):
    key, value = item.split("=")
    if key == "pad":
      lows, highs = zip(*(p.split("_") for p in value.split("x")))
      fields["pad_low"], fields["pad_high"] = [int(v) for v in lows], [int(v) for v in highs]
    else:
      fields[key] = [int(v) for v in value.split("x")]
  return fields


def convolution_flops(instruction: Instruction, lhs: Shape, rhs: Shape) -> float:
  labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", instruction.attributes)
  lhs_labels, rhs_labels, out_labels = labels.groups()
  window = _window(instruction.attributes)
  spatial = [c for c in lhs_labels if c.isdigit()]
  ones, zeros = [1] * len(spatial), [0] * len(spatial)
  # (output position, valid tap) pairs, a product over the spatial dimensions; the rest of
  # the output (batch, output features) multiplies it. The kernel's input dimension is
  # already per feature group.
  pairs, other = 1, instruction.shape.elements
  for n, digit in enumerate(spatial):
    out_size = instruction.shape.dims[out_labels.index(digit)]
    pairs *= _valid_taps(lhs.dims[lhs_labels.index(digit)], out_size, rhs.dims[rhs_labels.index(digit)],
                         window.get("stride", ones)[n], window.get("pad_low", zeros)[n],
                         window.get("lhs_dilate", ones)[n], window.get("rhs_dilate", ones)[n])
    other //= out_size
  return 2.0 * other * pairs * rhs.dims[rhs_labels.index("i")]


def dot_flops(instruction: Instruction, lhs: Shape) -> float:
  contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instruction.attributes)
  size = math.prod(lhs.dims[int(d)] for d in contracting.group(1).split(",") if d) if contracting else 1
  return 2.0 * instruction.shape.elements * size


def _reducer_ops(computations, instruction) -> int:
  called = _called(instruction)
  body = computations.get(called[0], []) if called else []
  return max(1, sum(1 for i in body if i.opcode not in _NO_FLOPS))


def library_call(instruction: Instruction) -> str:
  """"conv" or "gemm" for a custom-call into cuDNN or cuBLAS (how GPUs run convolutions and
  matrix products), else ""."""
  if instruction.opcode != "custom-call":
    return ""
  target = re.search(r'custom_call_target="([^"]+)"', instruction.attributes)
  target = target.group(1).lower() if target else ""
  if "conv" in target and "dim_labels=" in instruction.attributes:
    return "conv"
  if "gemm" in target or "matmul" in target:
    return "gemm"
  return ""


def _result(instruction: Instruction) -> Instruction:
  """The instruction with its result's shape alone: a library call returns (result, scratch)."""
  if instruction.shape.dtype != "tuple":
    return instruction
  return dataclasses.replace(instruction, shape=instruction.shape.parts[0])


def _gemm_flops(instruction: Instruction, lhs: Shape) -> float:
  # cuBLAS calls keep the dot's dimension numbers in their backend_config (JSON).
  contracting = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', instruction.attributes)
  dims = re.findall(r"\d+", contracting.group(1)) if contracting else []
  return 2.0 * _result(instruction).shape.elements * math.prod(lhs.dims[int(d)] for d in dims)


def _flops(instruction, shapes, computations) -> float:
  op = instruction.opcode
  operand_shapes = [shapes.get(o) for o in instruction.operands]
  if op == "convolution" or library_call(instruction) == "conv":
    return convolution_flops(_result(instruction), operand_shapes[0], operand_shapes[1])
  if op == "dot":
    return dot_flops(instruction, operand_shapes[0])
  if library_call(instruction) == "gemm":
    return _gemm_flops(instruction, operand_shapes[0])
  if op in ("reduce", "reduce-window", "select-and-scatter"):
    inputs = sum(s.elements for s in operand_shapes[:max(1, len(operand_shapes) // 2)] if s)
    parts = instruction.shape.parts if instruction.shape.dtype == "tuple" else (instruction.shape,)
    outputs = sum(p.elements for p in parts)
    if op == "reduce-window":
      window = _window(instruction.attributes)
      return outputs * math.prod(window.get("size", [1])) * _reducer_ops(computations, instruction)
    return max(inputs - outputs, 0) * _reducer_ops(computations, instruction)
  if op in _NO_FLOPS or op in _TRANSCENDENTAL:
    return 0.0
  return float(instruction.shape.elements) if instruction.shape.dtype != "tuple" else 0.0


def _neighbour_name(instruction: Instruction, by_name: dict[str, Instruction],
                    users: dict[str, list[Instruction]], depth: int = 8) -> str:
  """A name for an instruction XLA made without one. First along its largest operand (the
  data it transforms, not a weight: a key encoder's convolution is the key encoder's even
  though its weights come from the EMA), then the nearest named operand, then user.
  Parameters' names describe arguments, not work, and are passed over."""
  named = lambda c: c.op_name and c.opcode != "parameter"
  current = instruction
  for _ in range(depth):
    operands = [by_name[o] for o in current.operands if o in by_name]
    if not operands:
      break
    current = max(operands, key=lambda c: c.shape.bytes)
    if named(current):
      return current.op_name
  for step in (lambda c: [by_name[o] for o in c.operands if o in by_name],
               lambda c: users.get(c.name, [])):
    frontier = step(instruction)
    for _ in range(depth):
      for candidate in frontier:
        if named(candidate):
          return candidate.op_name
      frontier = [n for c in frontier for n in step(c)]
  return ""


def instruction_costs(hlo_text: str) -> list[Cost]:
  """One Cost per instruction that has flops or moves bytes, over the whole program."""
  computations, entry = parse_module(hlo_text)
  costs: list[Cost] = []

  def walk(name: str, inherited: str, fused: bool, seen: tuple[str, ...]):
    if name in seen or name not in computations:
      return
    shapes = {i.name: i.shape for i in computations[name]}
    by_name = {i.name: i for i in computations[name]}
    users: dict[str, list[Instruction]] = {}
    for instruction in computations[name]:
      for operand in instruction.operands:
        users.setdefault(operand, []).append(instruction)
    for instruction in computations[name]:
      op_name = (instruction.op_name if instruction.opcode != "parameter" else "") or (
          inherited if fused else _neighbour_name(instruction, by_name, users)) or inherited
      op = instruction.opcode
      if op == "fusion":
        # The kernel's traffic under the fusion's name, its arithmetic under each fused op's.
        walk(_called(instruction)[0], op_name, True, seen + (name,))
      elif op in _CONTROL or (op == "custom-call" and _called(instruction)):
        for callee in _called(instruction):
          walk(callee, op_name, fused, seen + (name,))
      flops = 0.0 if op == "fusion" else _flops(instruction, shapes, computations)
      traffic = 0.0
      if not fused and op not in _FREE_BYTES:
        written = _result(instruction) if library_call(instruction) else instruction
        traffic = written.shape.bytes + sum(shapes[o].bytes for o in instruction.operands
                                            if o in shapes)
      if flops or traffic:
        costs.append(Cost(op_name, op, flops, traffic))

  walk(entry, "", False, ())
  return costs
