"""Store the weights of a TFLite flatbuffer as int8 or float16 where that is exact.

A stock interpreter (LiteRT's XNNPACK delegate, tflite-runtime) expands weights that a
``DEQUANTIZE`` op makes from a constant ONCE, when the model is loaded, and then runs the
float kernels: such a file runs at the float model's speed on a phone, with no decoder of
ours. WFN makes that exact:

* int8 (``int8=True``): a convolution or fully connected weight whose every output channel
  is ``code * scale`` (int8 codes, one float32 scale per channel) in float32 arithmetic,
  value for value, is stored as int8 codes with per-channel scales (DEQUANTIZE version 5;
  2 for a single channel). WFN values are sums of a few powers of two, so most channels are
  int8 codes times a power of two (all of them after ``fix_weights(..., int8_exact=True)``);
  a BatchNorm scale the converter folded into the weight goes into the channel scale, and
  the product is still the converter's float32 weight. The one value not kept is the sign of
  a zero: code 0 gives +0.0 where the converter wrote -0.0 (a zero weight times a negative
  BatchNorm scale), which changes no output but the sign of an output that is exactly zero;
* float16: every other weight or bias of such an op whose values float16 holds exactly
  (the round trip float32 -> float16 -> float32 changes nothing), as TFLite's own float16
  quantization writes it (DEQUANTIZE version 3).

The outputs are the float32 file's, because the weights are the same numbers. A bias becomes
float16 only beside float16 weights: XNNPACK does not take an op whose bias is float16
beside float32 weights, and runs it several times slower. Everything else stays float32
(constants read by other ops, values neither form holds) and is listed with the reason;
the reasons are stored in the file's ``tfmot_wfn_weights`` metadata for
`tfmot_wfn.lite.inspect`.

```python
data, stored, kept = encode_exact_weights(float_tflite_bytes, int8=True)
open("model_int8_weight_only.tflite", "wb").write(data)
print([(t.name, t.dtype) for t in stored], [(t.name, t.reason) for t in kept])
```
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from tfmot_wfn.tflite import compaction
from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.palette_encoding import ConstantTensor
from tfmot_wfn.tflite.palette_format import NonPaletteTensor, display_name, non_float_reason

#: The metadata entry of such a file: the producer, the form, and for every constant the
#: reason it is stored as it is (zlib-compressed JSON), read by `read_weights_metadata`.
METADATA_NAME = "tfmot_wfn_weights"
#: DEQUANTIZE versions (TFLite's op versioning): float16 input 3, per-channel int8 input 5,
#: int8 with one scale 2.
DEQUANTIZE_FLOAT16_VERSION = 3
DEQUANTIZE_INT8_PER_CHANNEL_VERSION = 5
DEQUANTIZE_INT8_VERSION = 2
#: The output-channel axis of the weights (input 1) of the ops whose weights may be int8.
INT8_WEIGHT_AXES = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": 3}
FLOAT16_REASON = "exact float16 weights, expanded to float32 by DEQUANTIZE at load"
INT8_REASON = ("exact int8 weights (code * per-channel scale == the float32 weight), expanded "
               "to float32 by DEQUANTIZE at load")


@dataclasses.dataclass(frozen=True)
class StoredWeight:
    """A float32 constant now stored as ``dtype`` (``"float16"`` or ``"int8"``; ``bytes``: what
    its data adds to the file, 0 when another constant on the same buffer was stored first, as
    `inspect` counts it), made by a DEQUANTIZE; ``index``: the float32 tensor that DEQUANTIZE
    produces (the stored constant, its input, carries ``name``)."""

    subgraph: int
    name: str
    shape: Tuple[int, ...]
    elements: int
    bytes: int
    index: int
    dtype: str = "float16"


#: Called for each float32 constant that stays float32; returns what it is in the caller's
#: terms (put before the reason) or None.
Explainer = Callable[[int, int, str, np.ndarray], Optional[str]]
#: ``compact``: called for each float32 constant an op reads; returns its short name
#: (``"conv1/kernel"``) or None to leave it unnamed (as `palette_encoding.Labeler`).
Labeler = Callable[[ConstantTensor], Optional[str]]


def float16_exact(values: np.ndarray) -> np.ndarray:
    """Which float32 values float16 holds exactly (NaN never; overflow to inf is not exact).

    >>> float16_exact(np.array([0.5 + 2**-10, 2**-24, 1 / 3, 70000.0], np.float32)).tolist()
    [True, True, False, False]
    """
    v = np.asarray(values, np.float32)
    with np.errstate(over="ignore"):
        back = v.astype(np.float16).astype(np.float32)
    return back == v


def _channel_scale(row: np.ndarray) -> Optional[np.float32]:
    """A float32 scale with ``float32(code * scale) == v`` for every value of ``row`` and
    integer codes of at most 127, or None. Tried: the largest magnitude divided by each
    code 1..127, and the float32 numbers next to each quotient (it is rounded)."""
    magnitudes = np.unique(np.abs(row[row != 0]))
    if magnitudes.size == 0:
        return np.float32(1.0)
    if not np.isfinite(magnitudes[-1]):
        return None
    largest = magnitudes[-1]
    for code in range(1, 128):
        quotient = np.float32(largest / np.float32(code))
        for scale in (quotient, np.nextafter(quotient, np.float32(np.inf)),
                      np.nextafter(quotient, np.float32(0))):
            if not scale > 0:
                continue
            codes = np.round(magnitudes / scale)
            if codes[-1] <= 127 and np.array_equal(
                    (codes.astype(np.float32) * scale).astype(np.float32), magnitudes):
                return np.float32(scale)
    return None


def int8_codes(values: np.ndarray, axis: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(int8 codes, float32 scales)`` such that ``float32(codes * scales)`` (the scales
    broadcast along ``axis``) equals ``values`` value for value (-0.0 comes back as +0.0),
    or None when a channel has no such scale (codes would need more than 8 bits, or values
    are not finite).

    >>> codes, scales = int8_codes(np.array([[0.75, -0.25], [3.0, 1.5]], np.float32), 0)
    >>> codes.tolist(), scales.tolist()
    ([[3, -1], [2, 1]], [0.25, 1.5])
    """
    v = np.asarray(values, np.float32)
    rows = np.moveaxis(v, axis, 0).reshape(v.shape[axis], -1)
    scales = np.empty(rows.shape[0], np.float32)
    for c, row in enumerate(rows):
        scale = _channel_scale(row)
        if scale is None:
            return None
        scales[c] = scale
    codes = np.round(rows / scales[:, None])
    if np.abs(codes).max(initial=0) > 127 or not np.array_equal(
            (codes.astype(np.float32) * scales[:, None]).astype(np.float32), rows):
        return None
    moved = [v.shape[axis]] + [d for k, d in enumerate(v.shape) if k != axis % v.ndim]
    return np.moveaxis(codes.astype(np.int8).reshape(moved), 0, axis), scales


def _not_exact_reason(values: np.ndarray, exact: np.ndarray) -> str:
    bad = values[~exact].ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        error = np.abs(bad.astype(np.float16).astype(np.float32) - bad)
    worst = float(np.nanmax(error)) if np.isfinite(error).any() else float("inf")
    return (f"{bad.size} of {values.size} values not exact in float16 (largest rounding "
            f"{worst:.3g}): kept float32")


#: Stands for a weight's written name in a kept bias's reason until the names are final.
_PARTNER = "\x00weight\x00"


class _WeightEncoder:
    """Rewrites the exact weights of one model, subgraph by subgraph, and keeps records."""

    def __init__(self, model, int8: bool, explain: Optional[Explainer], compact: bool = False,
                 label: Optional[Labeler] = None):
        self.model, self.int8, self.explain = model, int8, explain
        self.compact, self.label = compact, label if compact else None
        self.labels: Dict[Tuple[int, int], str] = {}  # (subgraph, tensor) -> label
        self.partners: Dict[Tuple[int, int], int] = {}  # (subgraph, kept bias) -> its weight
        self.opcodes: Dict[int, int] = {}  # DEQUANTIZE version -> its operator code
        self.empty_buffer = fb.empty_buffer(model)
        # (old buffer, form, shape, axis) -> new buffer: int8 codes depend on shape and axis.
        self.new_buffers: Dict[Tuple, int] = {}
        self.sources: Dict[Tuple[int, int], int] = {}  # (subgraph, tensor) -> stored constant
        self.replaced = set()
        self.stored: List[StoredWeight] = []
        self.kept: List[NonPaletteTensor] = []

    def subgraph(self, s: int, subgraph) -> None:
        readers = fb.consumers(subgraph)
        # tensor -> ("int8", codes, scales, axis) or ("float16", values)
        forms: Dict[int, Tuple] = {}
        for i in range(len(subgraph.tensors)):
            tensor = subgraph.tensors[i]
            if not fb.is_constant(self.model, tensor) or i not in readers:
                continue
            if not fb.is_plain_float_constant(self.model, tensor):
                self._keep(s, i, non_float_reason(fb.type_name(tensor.type))
                           if tensor.type != fb.type_value("FLOAT32")
                           else "quantized, sparse or variable float tensor, left as stored")
                continue
            values = fb.constant_array(self.model, tensor)
            uses = {(fb.op_name(self.model, subgraph.operators[p]), slot)
                    for p, slot in readers[i]}
            self._note_label(s, i, tensor, values, uses)
            ops = sorted({op for op, _ in uses})
            if not set(ops) <= set(fb.BIAS_SLOTS):
                self._keep(s, i, f"read by {'/'.join(ops)}: kept float32 (stock interpreters "
                           "expand weights at load only for convolution and fully connected "
                           "ops)", values)
                continue
            form = self._int8_form(values, uses)
            if form is None:
                exact = float16_exact(values)
                if not exact.all():
                    self._keep(s, i, _not_exact_reason(values, exact), values)
                    continue
                form = ("float16", values)
            forms[i] = form
        self._keep_biases(s, subgraph, forms)
        inserts: Dict[int, List] = {}
        for i, form in forms.items():
            first = min(p for p, _ in readers[i])
            inserts.setdefault(first, []).append(self._store(s, subgraph, i, form))
        fb.insert_before(subgraph, inserts)

    def _note_label(self, s: int, i: int, tensor, values: np.ndarray, uses) -> None:
        if self.label is None:
            return
        shape = fb.tensor_shape(tensor)
        label = self.label(ConstantTensor(
            subgraph=s, index=i, name=fb.tensor_name(tensor), shape=shape, dtype="FLOAT32",
            elements=int(values.size), bytes=int(values.nbytes), outside_palette=-1,
            consumers=tuple(sorted(uses)), values=values))
        if label:
            self.labels[(s, i)] = label

    def written_labels(self) -> Dict[Tuple[int, int], str]:
        """The labels by the tensor that carries each weight's name in the file: the stored
        int8 / float16 constant where one was made, else the float32 tensor itself."""
        return {(s, self.sources.get((s, i), i)): label for (s, i), label in self.labels.items()}

    def _written_name(self, s: int, i: int) -> str:
        """Tensor ``i``'s name in the written file: that of the int8 / float16 constant that
        stores it where one was made (``t<index>`` when unnamed)."""
        j = self.sources.get((s, i), i)
        return display_name(fb.tensor_name(self.model.subgraphs[s].tensors[j]), j)

    def name_partners(self) -> None:
        """Put the weight's written name into the reason of each bias kept beside it."""
        self.kept = [dataclasses.replace(t, reason=t.reason.replace(
            _PARTNER, repr(self._written_name(t.subgraph, self.partners[(t.subgraph, t.index)]))))
            if (t.subgraph, t.index) in self.partners else t for t in self.kept]

    def rename_as_written(self) -> None:
        """The records name their tensors as the written file does (``t<index>``: unnamed)."""
        self.stored = [dataclasses.replace(t, name=self._written_name(t.subgraph, t.index))
                       for t in self.stored]
        self.kept = [dataclasses.replace(t, name=self._written_name(t.subgraph, t.index))
                     for t in self.kept]

    def _int8_form(self, values: np.ndarray, uses) -> Optional[Tuple]:
        """``("int8", codes, scales, axis)`` for a weight read only as the weights of ops with
        one output-channel axis, whose channels are all exact int8; else None."""
        axes = {INT8_WEIGHT_AXES.get(op) if slot == 1 else None for op, slot in uses}
        if not self.int8 or len(axes) != 1 or None in axes or values.ndim < 2:
            return None
        axis = axes.pop()
        found = int8_codes(values, axis)
        return None if found is None else ("int8", found[0], found[1], axis)

    def _keep_biases(self, s: int, subgraph, forms: Dict[int, Tuple]) -> None:
        """A float16 bias beside weights that are not float16 keeps XNNPACK from taking the
        op, which then runs several times slower (measured: 3.1x on a small CNN with
        float32 weights; float16 or int8 weights beside a float32 bias cost nothing): such a
        bias stays float32, until no op has one."""
        changed = True
        while changed:
            changed = False
            for op in subgraph.operators:
                slot = fb.BIAS_SLOTS.get(fb.op_name(self.model, op))
                inputs = list(op.inputs) if op.inputs is not None else []
                if slot is None or len(inputs) <= slot or min(inputs[1], inputs[slot]) < 0:
                    continue
                weight, bias = int(inputs[1]), int(inputs[slot])
                if bias in forms and forms[bias][0] == "float16" and (
                        weight not in forms or forms[weight][0] != "float16"):
                    values = forms.pop(bias)[1]
                    kind = "int8" if weight in forms else "float32"
                    # The weight's name as the written file gives it: filled in by
                    # `name_partners`, once compaction has renamed the tensors.
                    self.partners[(s, bias)] = weight
                    self._keep(s, bias, f"kept float32 beside the {kind} weights {_PARTNER} of "
                               f"its {fb.op_name(self.model, op)} (XNNPACK takes a float16 "
                               "bias only beside float16 weights)", values)
                    changed = True

    def _opcode(self, version: int) -> int:
        if version not in self.opcodes:
            self.opcodes[version] = fb.opcode_index(
                self.model, fb.schema().BuiltinOperator.DEQUANTIZE, version)
        return self.opcodes[version]

    def _store(self, s: int, subgraph, i: int, form: Tuple):
        """Move tensor ``i``'s data into an int8 / float16 constant; returns the DEQUANTIZE
        that makes tensor ``i`` from it."""
        mod = fb.schema()
        tensor = subgraph.tensors[i]
        shape, name = fb.tensor_shape(tensor), fb.tensor_name(tensor)
        dtype = form[0]
        data = (form[1].astype("<f2") if dtype == "float16" else form[1]).tobytes()
        key = (tensor.buffer, dtype, shape, form[3] if dtype == "int8" else None)
        shared = key in self.new_buffers  # a second tensor on one buffer: stored once
        if not shared:
            self.new_buffers[key] = fb.add_buffer(self.model, data)
        # The constant carries the weight's name; the float32 tensor DEQUANTIZE makes needs none.
        tensor_type = mod.TensorType.FLOAT16 if dtype == "float16" else mod.TensorType.INT8
        source = fb.add_tensor(subgraph, name, shape, tensor_type, self.new_buffers[key])
        if dtype == "int8":
            quant = mod.QuantizationParametersT()
            quant.scale = np.asarray(form[2], np.float32)
            quant.zeroPoint = np.zeros(form[2].size, np.int64)
            quant.quantizedDimension = int(form[3])
            subgraph.tensors[source].quantization = quant
        tensor.name = None
        self.replaced.add(tensor.buffer)
        tensor.buffer = self.empty_buffer
        op = mod.OperatorT()
        # TFLite's op versioning: per-channel int8 (more than one scale) 5, per-tensor int8 2.
        op.opcodeIndex = self._opcode(
            DEQUANTIZE_FLOAT16_VERSION if dtype == "float16"
            else DEQUANTIZE_INT8_PER_CHANNEL_VERSION if form[2].size > 1
            else DEQUANTIZE_INT8_VERSION)
        self.sources[(s, i)] = source
        op.inputs = np.asarray([source], np.int32)
        op.outputs = np.asarray([i], np.int32)
        self.stored.append(StoredWeight(subgraph=s, name=name, shape=shape,
                                        elements=int(np.prod(shape)),
                                        bytes=0 if shared else len(data), index=i,
                                        dtype=dtype))
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


def read_weights_metadata(model) -> Optional[Dict]:
    """The ``tfmot_wfn_weights`` entry of a model: ``{"producer", "form" ("float16" or
    "int8_weight_only"), "reasons": {(subgraph, tensor index): reason}}``, or None for a file
    `encode_exact_weights` did not write."""
    raw = fb.get_metadata(model, METADATA_NAME)
    if raw is None:
        return None
    try:
        entry = json.loads(zlib.decompress(bytes(raw)).decode("utf-8"))
        reasons = {(int(k["subgraph"]), int(k["index"])): str(k["reason"])
                   for k in entry["tensors"]}
        form = str(entry["form"])
    except (zlib.error, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"damaged {METADATA_NAME} metadata: {e}") from e
    return {"producer": str(entry.get("producer", "")), "form": form, "reasons": reasons}


def encode_exact_weights(tflite: bytes, int8: bool = True, explain: Optional[Explainer] = None,
                         producer: str = "", compact: bool = False,
                         label: Optional[Labeler] = None,
                         ) -> Tuple[bytes, List[StoredWeight], List[NonPaletteTensor]]:
    """Store the weights of ``tflite`` as int8 (``int8=True``) or float16 where exact.

    Args:
      tflite: the bytes of a float TFLite model (e.g. from the converter).
      int8: try int8 codes with per-channel scales first for the weights of convolution,
        depthwise convolution and fully connected ops (the file is then marked
        ``"int8_weight_only"``); False: float16 only (``"float16"``, DEQUANTIZE version 3,
        which older interpreters than per-channel int8's version 5 run too).
      explain: ``explain(subgraph, tensor index, name, values)`` for a float32 constant
        that stays float32: what it is in the caller's terms (e.g. "BatchNorm 'bn1'
        scale"), put before the reason, or None.
      producer: a free text stored in the metadata (e.g. the tfmot_wfn version).
      compact: drop what costs bytes and no interpreter reads, as
        `palette_encoding.encode_palette(..., compact=True)` does (`compaction`): tensor
        names but the model's inputs/outputs and those ``label`` gives, empty
        quantization tables, ``has_rank`` of ranked tensors, inner shape signatures,
        unused tensors and buffers, and the converter's dynamic-batch reshape idiom.
        Every output is the same, for every batch size. Buffers keep their 16-byte
        alignment.
      label: with ``compact``, called for each float32 constant an op reads; returns its
        short name (``"conv1/kernel"``, given to the int8 / float16 constant that stores
        it) or None to leave it unnamed (``t<index>`` in the records and in `inspect`).

    Returns:
      ``(bytes, stored weights, constants kept as they were)``, named as the written
      file names them; a constant no op reads is left alone and not listed.

    Raises:
      ValueError: not a TFLite file, or a file whose weights are already float16 or int8.
    """
    model = fb.read_model(tflite)
    if any(t.type in (fb.type_value("FLOAT16"), fb.type_value("INT8"))
           and fb.is_constant(model, t) for _, _, t in fb.iter_tensors(model)):
        raise ValueError("the TFLite file already holds float16 or int8 constants: pass the "
                         "float32 file (export_tflite(..., mode='dense'))")
    if compact:
        compaction.compact_graph(model)
    encoder = _WeightEncoder(model, int8, explain, compact, label)
    for s, subgraph in enumerate(model.subgraphs):
        encoder.subgraph(s, subgraph)
    encoder.free_replaced()
    if compact:
        compaction.compact_tables(model, encoder.written_labels())
        encoder.rename_as_written()
    else:
        # The converter's min_runtime_version no longer holds once a DEQUANTIZE is added.
        compaction.drop_converter_metadata(model)
    encoder.name_partners()
    reasons = [{"subgraph": t.subgraph, "index": t.index, "reason": t.reason}
               for t in encoder.kept]
    reasons += [{"subgraph": t.subgraph, "index": encoder.sources[(t.subgraph, t.index)],
                 "reason": INT8_REASON if t.dtype == "int8" else FLOAT16_REASON}
                for t in encoder.stored]
    entry = {"producer": producer, "form": "int8_weight_only" if int8 else "float16",
             "tensors": reasons}
    fb.set_metadata(model, METADATA_NAME, zlib.compress(json.dumps(entry).encode("utf-8"), 9))
    return fb.write_model(model), encoder.stored, encoder.kept


__all__ = ["DEQUANTIZE_FLOAT16_VERSION", "DEQUANTIZE_INT8_PER_CHANNEL_VERSION",
           "DEQUANTIZE_INT8_VERSION", "FLOAT16_REASON",
           "INT8_REASON", "INT8_WEIGHT_AXES", "METADATA_NAME", "StoredWeight",
           "encode_exact_weights", "float16_exact", "int8_codes", "read_weights_metadata"]
