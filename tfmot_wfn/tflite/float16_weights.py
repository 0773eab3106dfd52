"""Store the float32 constants of a TFLite flatbuffer as float16 where that is exact.

WFN weights are 0 or sums of a few signed powers of two, so most of them are exactly
representable in float16 (11 significant bits, exponents -24 to 15). The weights and biases
of convolution and fully connected ops whose values ALL survive the round trip float32 ->
float16 -> float32 unchanged are stored as float16, each produced in the graph by a
``DEQUANTIZE`` right before the first op that reads it, as TFLite's own float16
quantization writes it. Stock interpreters (LiteRT's XNNPACK delegate) expand such static
float16 weights once when the model is loaded, so the file runs at the float model's speed
on a phone, with no decoder of ours; its outputs are those of the float32 file, because the
weights are the same numbers. A bias becomes float16 only beside float16 weights: XNNPACK
does not take an op whose bias is float16 beside a float32 kernel, which then runs several
times slower (float16 weights beside a float32 bias cost nothing). The other constants stay float32 and are listed with
the reason; the reasons are stored in the file's ``tfmot_wfn_float16`` metadata for
`tfmot_wfn.lite.inspect`.

```python
data, stored, kept = encode_float16(float_tflite_bytes)
open("model_float16.tflite", "wb").write(data)
print([t.name for t in stored], [(t.name, t.reason) for t in kept])
```
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.palette_format import NonPaletteTensor, non_float_reason

#: The metadata entry of a float16 file: the producer and, for each float32 constant kept,
#: its reason (zlib-compressed JSON), read back by `read_float16_metadata` / `lite.inspect`.
METADATA_NAME = "tfmot_wfn_float16"
#: The DEQUANTIZE version that reads float16 (TFLite's op versioning: int8 / uint8 input
#: is version 1-2, float16 version 3).
DEQUANTIZE_FLOAT16_VERSION = 3


@dataclasses.dataclass(frozen=True)
class Float16Tensor:
    """A float32 constant stored as float16 (``bytes``: its float16 data), decoded by a
    DEQUANTIZE; ``index``: its float32 tensor, which that DEQUANTIZE now produces (the
    float16 constant, its input, now carries ``name``)."""

    subgraph: int
    name: str
    shape: Tuple[int, ...]
    elements: int
    bytes: int
    index: int


#: Called for each float32 constant that stays float32; returns what it is in the caller's
#: terms (put before the reason) or None.
Explainer = Callable[[int, int, str, np.ndarray], Optional[str]]


def float16_exact(values: np.ndarray) -> np.ndarray:
    """Which float32 values float16 holds exactly (NaN never; overflow to inf is not exact).

    >>> float16_exact(np.array([0.5 + 2**-10, 2**-24, 1 / 3, 70000.0], np.float32)).tolist()
    [True, True, False, False]
    """
    v = np.asarray(values, np.float32)
    with np.errstate(over="ignore"):
        back = v.astype(np.float16).astype(np.float32)
    return back == v


def _reason(values: np.ndarray, exact: np.ndarray) -> str:
    bad = values[~exact].ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        error = np.abs(bad.astype(np.float16).astype(np.float32) - bad)
    worst = float(np.nanmax(error)) if np.isfinite(error).any() else float("inf")
    return (f"{bad.size} of {values.size} values not exact in float16 (largest rounding "
            f"{worst:.3g}): kept float32")


class _Float16Encoder:
    """Rewrites the exact float32 constants of one model, subgraph by subgraph."""

    def __init__(self, model, explain: Optional[Explainer]):
        self.model, self.explain = model, explain
        self.dequantize: Optional[int] = None  # its operator code, added with the first one
        self.float16 = fb.schema().TensorType.FLOAT16
        self.empty_buffer = fb.empty_buffer(model)
        self.half_buffers = {}  # original buffer -> its float16 buffer (shared weights once)
        self.replaced = set()
        self.stored: List[Float16Tensor] = []
        self.kept: List[NonPaletteTensor] = []

    def subgraph(self, s: int, subgraph) -> None:
        readers = fb.consumers(subgraph)
        candidates = {}  # tensor -> its values, while it may become float16
        for i in range(len(subgraph.tensors)):
            tensor = subgraph.tensors[i]
            if not fb.is_constant(self.model, tensor) or i not in readers:
                continue
            if not fb.is_plain_float_constant(self.model, tensor):
                self._keep(s, i, non_float_reason(fb.type_name(tensor.type))
                           if tensor.type != fb.type_value("FLOAT32")
                           else "quantized or sparse float tensor, left as stored")
                continue
            values = fb.constant_array(self.model, tensor)
            ops = sorted({fb.op_name(self.model, subgraph.operators[p]) for p, _ in readers[i]})
            exact = float16_exact(values)
            if not set(ops) <= set(fb.BIAS_SLOTS):
                self._keep(s, i, f"read by {'/'.join(ops)}: kept float32 (stock interpreters "
                           "expand float16 at load only for the weights and biases of "
                           "convolution and fully connected ops)", values)
            elif not exact.all():
                self._keep(s, i, _reason(values, exact), values)
            else:
                candidates[i] = values
        self._keep_partners(s, subgraph, candidates)
        inserts = {}
        for i, values in candidates.items():
            first = min(p for p, _ in readers[i])
            inserts.setdefault(first, []).append(self._store(s, subgraph, i, values))
        ops = []
        for pos, op in enumerate(subgraph.operators):
            ops.extend(inserts.get(pos, []))
            ops.append(op)
        subgraph.operators = ops

    def _keep_partners(self, s: int, subgraph, candidates: Dict[int, np.ndarray]) -> None:
        """A float16 bias beside a float32 filter keeps XNNPACK from taking the op, which then
        runs several times slower (measured: 3.1x on a small CNN; a float16 filter beside a
        float32 bias costs nothing): such a bias stays float32, until no op has one."""
        changed = True
        while changed:
            changed = False
            for op in subgraph.operators:
                slot = fb.BIAS_SLOTS.get(fb.op_name(self.model, op))
                inputs = list(op.inputs) if op.inputs is not None else []
                if slot is None or len(inputs) <= slot or min(inputs[1], inputs[slot]) < 0:
                    continue
                weight, bias = int(inputs[1]), int(inputs[slot])
                if bias in candidates and weight not in candidates:
                    values = candidates.pop(bias)
                    name = fb.tensor_name(subgraph.tensors[weight]) or f"t{weight}"
                    self._keep(s, bias, f"kept float32 beside the float32 weights {name!r} of "
                               f"its {fb.op_name(self.model, op)} (XNNPACK does not take an op "
                               "with a float16 bias and float32 weights)", values)
                    changed = True

    def _store(self, s: int, subgraph, i: int, values: np.ndarray):
        """Move tensor ``i``'s data into a float16 tensor; returns the DEQUANTIZE that makes it."""
        tensor = subgraph.tensors[i]
        if tensor.buffer not in self.half_buffers:
            self.half_buffers[tensor.buffer] = fb.add_buffer(
                self.model, values.astype("<f2").tobytes())
        shape, name = fb.tensor_shape(tensor), fb.tensor_name(tensor)
        # The constant carries the weight's name; the float32 tensor DEQUANTIZE makes needs none.
        half = fb.add_tensor(subgraph, name, shape, self.float16,
                             self.half_buffers[tensor.buffer])
        tensor.name = None
        self.replaced.add(tensor.buffer)
        tensor.buffer = self.empty_buffer
        if self.dequantize is None:
            self.dequantize = fb.opcode_index(
                self.model, fb.schema().BuiltinOperator.DEQUANTIZE, DEQUANTIZE_FLOAT16_VERSION)
        op = fb.schema().OperatorT()
        op.opcodeIndex = self.dequantize
        op.inputs = np.asarray([half], np.int32)
        op.outputs = np.asarray([i], np.int32)
        self.stored.append(Float16Tensor(subgraph=s, name=name, shape=shape,
                                         elements=int(values.size), bytes=2 * int(values.size),
                                         index=i))
        return op

    def _keep(self, s: int, i: int, reason: str, values: Optional[np.ndarray] = None) -> None:
        tensor = self.model.subgraphs[s].tensors[i]
        role = self.explain(s, i, fb.tensor_name(tensor), values) \
            if self.explain is not None and values is not None else None
        shape = fb.tensor_shape(tensor)
        self.kept.append(NonPaletteTensor(
            subgraph=s, name=fb.tensor_name(tensor), shape=shape,
            dtype=fb.type_name(tensor.type), elements=int(np.prod(shape)) if shape else 1,
            bytes=fb.buffer_bytes(self.model, tensor.buffer),
            reason=f"{role}: {reason}" if role else reason, index=i))

    def free_replaced(self) -> None:
        for b in self.replaced - fb.referenced_buffers(self.model):
            self.model.buffers[b].data = None


def read_float16_metadata(model) -> Optional[Dict]:
    """The ``tfmot_wfn_float16`` entry of a model: ``{"producer", "kept": {(subgraph, tensor
    index): reason}}``, or None for a file `encode_float16` did not write."""
    raw = fb.get_metadata(model, METADATA_NAME)
    if raw is None:
        return None
    try:
        entry = json.loads(zlib.decompress(bytes(raw)).decode("utf-8"))
        kept = {(int(k["subgraph"]), int(k["index"])): str(k["reason"]) for k in entry["kept"]}
    except (zlib.error, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"damaged {METADATA_NAME} metadata: {e}") from e
    return {"producer": str(entry.get("producer", "")), "kept": kept}


def encode_float16(tflite: bytes, explain: Optional[Explainer] = None, producer: str = ""
                   ) -> Tuple[bytes, List[Float16Tensor], List[NonPaletteTensor]]:
    """Store every float32 constant of ``tflite`` that float16 holds exactly as float16.

    Args:
      tflite: the bytes of a float TFLite model (e.g. from the converter).
      explain: ``explain(subgraph, tensor index, name, values)`` for a float32 constant
        that stays float32: what it is in the caller's terms (e.g. "BatchNorm 'bn1'
        scale"), put before the reason, or None.
      producer: a free text stored in the metadata (e.g. the tfmot_wfn version).

    Returns:
      ``(bytes, float16 tensors, constants kept as they were)``; a constant no op reads
      is left alone and not listed.

    Raises:
      ValueError: not a TFLite file, or a file that already holds float16 tensors.
    """
    model = fb.read_model(tflite)
    if any(t.type == fb.type_value("FLOAT16") for _, _, t in fb.iter_tensors(model)):
        raise ValueError("the TFLite file already holds float16 tensors: pass the float32 file")
    encoder = _Float16Encoder(model, explain)
    for s, subgraph in enumerate(model.subgraphs):
        encoder.subgraph(s, subgraph)
    encoder.free_replaced()
    entry = {"producer": producer, "kept": [
        {"subgraph": t.subgraph, "index": t.index, "reason": t.reason} for t in encoder.kept]}
    fb.set_metadata(model, METADATA_NAME, zlib.compress(json.dumps(entry).encode("utf-8"), 9))
    return fb.write_model(model), encoder.stored, encoder.kept


__all__ = ["DEQUANTIZE_FLOAT16_VERSION", "Float16Tensor", "METADATA_NAME", "encode_float16",
           "float16_exact", "read_float16_metadata"]
