"""Exact int8 weights: fixed values stored as int8 codes times a power-of-two scale (no Keras).

WFN values are 0 or sums of a few signed powers of two. In an output channel whose
non-zero values are all multiples of ``2^e`` (``e`` the finest power of two they use)
with ``max|v| / 2^e <= 127``, every weight is ``code * 2^e`` EXACTLY, ``code`` an
int8. TFLite's converter picks max-abs scales (``max|v| / 127``), which round; this
module sets the codes and scales of a fully integer TFLite model itself:

* `fit_power_of_two`: for the float values of one channel (or tensor), the codes and
  exponent, or why they do not fit 8 bits;
* `rewrite_weight`: on the flatbuffer, give one op's int8 weight exact codes and
  per-channel scales ``2^e * multiplier`` (the multiplier: a BatchNorm scale the
  converter folded in, else 1), ``e`` the finest exponent at which the channel's codes
  still fit int8 (`widest_codes`: the codes span the int8 range as max-abs codes do, so
  the bias step below is as fine as the converter's), and re-quantize its int32 bias at
  ``input_scale * weight_scale``; channels that cannot be exact keep the converter's
  codes and are reported with the reason and their worst-case error;
* the ``tfmot_wfn_int8`` metadata entry that records which channels are exact
  (`tfmot_wfn.tflite.inspection` reads it).

```python
fit = fit_power_of_two(np.array([0.5, -0.25, 0.125]))
fit.exact, fit.exponent, fit.codes          # True, -3, [4, -2, 1]
```
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfmot_wfn.tflite import flatbuffer as fb
# The exactness test itself is shared with the int8_exact fixing constraint (core).
from tfmot_wfn.utils.power_of_two_codes import (  # noqa: F401 (re-exported)
    MAX_CODE, PowerOfTwoFit, finest_exponent, fit_power_of_two, widest_codes,
)

INT8_METADATA_NAME = "tfmot_wfn_int8"
INT8_FORMAT_VERSION = 1
#: Ops whose input 1 is an int8 weight with output channels on this axis, and input 2 the bias.
WEIGHT_OPS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": -1}
_INT32_MAX = 2 ** 31 - 1


# ------------------------------------------------------------------ numpy helpers
def channel_rows(array: np.ndarray, axis: int) -> np.ndarray:
    """``array`` as rows, one per output channel on ``axis``."""
    return np.moveaxis(np.asarray(array), axis, 0).reshape(array.shape[axis], -1)


def from_channel_rows(rows: np.ndarray, shape: Tuple[int, ...], axis: int) -> np.ndarray:
    moved = list(shape)
    moved.insert(0, moved.pop(axis % len(shape)))
    return np.moveaxis(rows.reshape(moved), 0, axis % len(shape))


# --------------------------------------------------------------------- reports
@dataclasses.dataclass(frozen=True)
class InexactChannel:
    """A weight channel stored with the converter's rounded codes (``channel`` -1: the tensor).

    ``max_error``: ``max |dequantized - float weight|`` over the channel (the float
    weight with any folded BatchNorm scale), NaN when no Keras weight matched.
    """

    tensor: str
    layer: str
    channel: int
    reason: str
    max_error: float


@dataclasses.dataclass(frozen=True)
class Int8Weight:
    """One int8 weight tensor of an int8 export: how many of its channels are exact.

    ``folded``: what the converter folded into the weight and the channel scales now
    carry (``2^e * s``): ``"BatchNorm 'bn1'"``, ``"input Rescaling 0.00392"``..., "" if
    nothing. ``bias_exact``: bias channels whose int32 value times
    ``input_scale * weight_scale`` is the float bias exactly (of ``bias_channels``);
    ``bias_max_error``: the largest bias error.
    """

    subgraph: int
    tensor: str
    layer: str
    op: str
    channels: int
    exact_channels: int
    per_channel: bool
    distinct_codes: int
    bytes: int
    folded: str = ""
    bias_channels: int = 0
    bias_exact: int = 0
    bias_max_error: float = 0.0


@dataclasses.dataclass
class Int8Target:
    """What one op's weight should hold: the float weight (TFLite layout) and its context.

    ``weight``: the palette values (before any BatchNorm scale), float64, TFLite layout
    (None when no Keras weight matched); ``multiplier``: per output channel, the
    scale the converter folded in (a BatchNorm's, float32), None for 1; ``folded``: what
    that scale is; ``bias``: the float
    bias the op adds (None: dequantize the converter's).
    """

    layer: str
    weight: Optional[np.ndarray]
    multiplier: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    folded: str = ""
    reason: str = ""


def _scales(tensor) -> np.ndarray:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return np.zeros(0, np.float32)
    return np.asarray(q.scale, np.float32)


def _set_quantization(tensor, scales: np.ndarray, axis: int) -> None:
    q = tensor.quantization
    q.scale = np.asarray(scales, np.float32)
    q.zeroPoint = np.zeros(len(scales), np.int64)
    q.quantizedDimension = int(axis) if len(scales) > 1 else 0


def _weight_channels(codes: np.ndarray, scales: np.ndarray, axis: int,
                     target: Int8Target) -> Tuple[np.ndarray, np.ndarray, list]:
    """New (codes, scales) of a per-channel weight, and the inexact channels."""
    rows = channel_rows(codes, axis).copy()
    new_scales = scales.astype(np.float32).copy()
    mult = (np.ones(rows.shape[0], np.float32) if target.multiplier is None
            else np.asarray(target.multiplier, np.float32))
    weight_rows = channel_rows(target.weight, axis)
    inexact = []
    for c in range(rows.shape[0]):
        fit = widest_codes(fit_power_of_two(weight_rows[c]))
        if fit.exact and fit.exponent is not None:
            # Scales are positive: a negative multiplier (gamma < 0) flips the codes' signs.
            sign = np.int8(-1 if mult[c] < 0 else 1)
            scale = np.float32(np.ldexp(abs(np.float64(mult[c])), fit.exponent))
            if np.isfinite(scale) and scale > 0 and np.ldexp(np.float64(scale), -fit.exponent) \
                    == abs(np.float64(mult[c])):
                rows[c], new_scales[c] = sign * fit.codes, scale
                continue
            fit = PowerOfTwoFit(False, fit.exponent, fit.codes, (
                f"scale 2^{fit.exponent} * {float(mult[c]):.6g} is not a normal float32 "
                "(a zero or extreme BatchNorm scale)"))
        elif fit.exact:  # all zero
            rows[c] = 0
            continue
        error = float(np.max(np.abs(rows[c].astype(np.float64) * new_scales[c]
                                    - weight_rows[c] * np.float64(mult[c]))))
        inexact.append((c, fit.reason, error))
    return from_channel_rows(rows, codes.shape, axis), new_scales, inexact


def _requantize_bias(model, subgraph, op, new_scales, target) -> Tuple[int, int, float]:
    """Set the op's int32 bias at ``input_scale * new weight scales``: (channels, exact, error)."""
    if op.inputs is None or len(op.inputs) < 3 or int(op.inputs[2]) < 0:
        return 0, 0, 0.0
    tensor = subgraph.tensors[int(op.inputs[2])]
    old_q = fb.constant_array(model, tensor)
    if tensor.type != fb.type_value("INT32") or old_q is None:
        return 0, 0, 0.0
    input_scale = np.float64(_scales(subgraph.tensors[int(op.inputs[0])])[0])
    old_bias_scale = _scales(tensor).astype(np.float64)
    bias = (old_q.astype(np.float64) * old_bias_scale if target.bias is None
            else np.asarray(target.bias, np.float64))
    ws = np.broadcast_to(np.asarray(new_scales, np.float64), old_q.shape)
    bias_scale = (input_scale * ws).astype(np.float32)
    q = np.clip(np.round(bias / bias_scale.astype(np.float64)), -_INT32_MAX, _INT32_MAX)
    error = np.abs(q * bias_scale.astype(np.float64) - bias)
    buffer = fb.add_buffer(model, q.astype("<i4").tobytes())
    old_buffer = int(tensor.buffer)
    tensor.buffer = buffer
    if old_buffer > 0 and old_buffer not in fb.referenced_buffers(model):
        model.buffers[old_buffer].data = None
    _set_quantization(tensor, bias_scale if len(old_bias_scale) > 1 else bias_scale[:1], 0)
    return int(q.size), int(np.count_nonzero(error == 0)), float(error.max(initial=0.0))


def _set_codes(model, tensor, codes: np.ndarray) -> None:
    old = int(tensor.buffer)
    tensor.buffer = fb.add_buffer(model, np.ascontiguousarray(codes, np.int8).tobytes())
    if old > 0 and old not in fb.referenced_buffers(model):
        model.buffers[old].data = None


def rewrite_weight(model, s: int, op, target: Int8Target
                   ) -> Tuple[Int8Weight, List[InexactChannel]]:
    """Give ``op``'s int8 weight exact power-of-two codes where ``target.weight`` allows.

    Per-channel weights: channel ``c`` gets codes ``W_c / 2^e`` and scale
    ``2^e * multiplier_c`` when `fit_power_of_two` fits; the others keep the
    converter's codes. A per-tensor weight gets one ``2^e`` when the whole tensor fits
    (and no multiplier). The int32 bias is re-quantized at ``input_scale * scale``.
    """
    subgraph = model.subgraphs[s]
    name = fb.op_name(model, op)
    axis = WEIGHT_OPS[name]
    tensor = subgraph.tensors[int(op.inputs[1])]
    tensor_name = fb.tensor_name(tensor)
    codes = fb.constant_array(model, tensor)
    scales = _scales(tensor)
    per_channel = scales.size > 1 or (codes.shape[axis] == 1 and scales.size == 1)
    channels = int(codes.shape[axis])
    inexact: List[InexactChannel] = []
    new_codes, new_scales = codes, scales
    if target.weight is None:
        inexact.append(InexactChannel(tensor_name, target.layer, -1, target.reason, float("nan")))
    elif per_channel:
        new_codes, new_scales, bad = _weight_channels(codes, scales, axis, target)
        inexact = [InexactChannel(tensor_name, target.layer, c, r, e) for c, r, e in bad]
    else:
        new_codes, new_scales, reason = _per_tensor(codes, scales, target)
        if reason:
            error = float(np.max(np.abs(codes.astype(np.float64) * np.float64(scales[0])
                                        - _folded(target, axis)), initial=0.0))
            inexact.append(InexactChannel(tensor_name, target.layer, -1, reason, error))
    if new_codes is not codes:
        _set_codes(model, tensor, new_codes)
        _set_quantization(tensor, new_scales, axis % codes.ndim)
    bias = _requantize_bias(model, subgraph, op, new_scales, target)
    exact = channels - (channels if any(i.channel < 0 for i in inexact) else len(inexact))
    return Int8Weight(
        subgraph=s, tensor=tensor_name, layer=target.layer, op=name, channels=channels,
        exact_channels=exact, per_channel=per_channel,
        distinct_codes=int(np.unique(new_codes).size), bytes=int(new_codes.size),
        folded=target.folded, bias_channels=bias[0], bias_exact=bias[1],
        bias_max_error=bias[2]), inexact


def _folded(target: Int8Target, axis: int) -> np.ndarray:
    w = np.asarray(target.weight, np.float64)
    if target.multiplier is None:
        return w
    shape = [1] * w.ndim
    shape[axis] = -1
    return w * np.asarray(target.multiplier, np.float64).reshape(shape)


def _per_tensor(codes, scales, target: Int8Target):
    if target.multiplier is not None and np.ptp(np.asarray(target.multiplier)) > 0:
        return codes, scales, ("a per-tensor scale cannot carry the per-channel scale of "
                               f"the {target.folded} folded into it")
    fit = widest_codes(fit_power_of_two(target.weight))
    if not fit.exact:
        return codes, scales, fit.reason
    if fit.exponent is None:
        return np.zeros_like(codes), scales, ""
    mult = 1.0 if target.multiplier is None else float(np.asarray(target.multiplier).ravel()[0])
    return fit.codes.reshape(codes.shape), np.asarray(
        [np.ldexp(np.float64(mult), fit.exponent)], np.float32), ""


# ----------------------------------------------------------------- metadata
def write_int8_metadata(model, weights: List[Int8Weight], inexact: List[InexactChannel],
                        producer: str) -> None:
    """Record the exact channels in the ``tfmot_wfn_int8`` metadata entry (zlib JSON)."""
    entry = {
        "version": INT8_FORMAT_VERSION, "producer": producer,
        "weights": [dataclasses.asdict(w) for w in weights],
        "inexact": [dataclasses.asdict(i) for i in inexact],
    }
    text = json.dumps(entry, separators=(",", ":"), allow_nan=True)
    fb.set_metadata(model, INT8_METADATA_NAME, zlib.compress(text.encode("utf-8"), 9))


def read_int8_metadata(model) -> Optional[Dict]:
    """The ``tfmot_wfn_int8`` entry of a model (``weights``/``inexact`` lists), or None."""
    raw = fb.get_metadata(model, INT8_METADATA_NAME)
    if raw is None:
        return None
    try:
        entry = json.loads(zlib.decompress(raw).decode("utf-8"))
    except (zlib.error, ValueError) as e:
        raise ValueError(f"damaged {INT8_METADATA_NAME} metadata: {e}") from e
    entry["weights"] = [Int8Weight(**w) for w in entry.get("weights", [])]
    entry["inexact"] = [InexactChannel(**i) for i in entry.get("inexact", [])]
    return entry


def int8_weight_ops(model):
    """``(subgraph, op)`` of every op reading a constant int8 weight with scales."""
    for s, subgraph in enumerate(model.subgraphs or []):
        for op in subgraph.operators or []:
            if fb.op_name(model, op) not in WEIGHT_OPS or op.inputs is None \
                    or len(op.inputs) < 2 or int(op.inputs[1]) < 0:
                continue
            tensor = subgraph.tensors[int(op.inputs[1])]
            if tensor.type == fb.type_value("INT8") and fb.is_constant(model, tensor) \
                    and _scales(tensor).size:
                yield s, op


def dequantized_weight(model, subgraph, op) -> np.ndarray:
    """The float value of ``op``'s int8 weight: codes times the per-channel (or one) scale."""
    tensor = subgraph.tensors[int(op.inputs[1])]
    codes = fb.constant_array(model, tensor).astype(np.float64)
    scales = _scales(tensor).astype(np.float64)
    if scales.size == 1:
        return codes * scales[0]
    shape = [1] * codes.ndim
    shape[int(tensor.quantization.quantizedDimension)] = -1
    return codes * scales.reshape(shape)


def int8_tensor_reasons(model, entry: Optional[Dict]) -> Dict[Tuple[int, int], str]:
    """``(subgraph, tensor index) -> what it is`` for the int8 weights and int32 biases.

    ``entry``: the `read_int8_metadata` of the model (None: a converter's own int8
    file, whose channels are not known to be exact).
    """
    known = {} if entry is None else {(w.subgraph, w.tensor): w for w in entry["weights"]}
    reasons = {}
    for s, op in int8_weight_ops(model):
        tensors = model.subgraphs[s].tensors
        index = int(op.inputs[1])
        w = known.get((s, fb.tensor_name(tensors[index])))
        layer = f" of {w.layer!r}" if w is not None and w.layer else ""
        scales = "per-channel" if _scales(tensors[index]).size > 1 else "per-tensor"
        reasons[(s, index)] = (
            f"int8 weight{layer} ({scales} scales): {w.exact_channels}/{w.channels} channels "
            "exact (code * power-of-two scale == Keras weight)" if w is not None else
            f"int8 weight ({scales} scales, no tfmot_wfn int8 metadata: exactness unknown)")
        if len(op.inputs) > 2 and int(op.inputs[2]) >= 0:
            reasons[(s, int(op.inputs[2]))] = "int32 bias at input_scale * weight_scale"
    return reasons


__all__ = ["INT8_METADATA_NAME", "InexactChannel", "Int8Target", "Int8Weight", "MAX_CODE",
           "PowerOfTwoFit", "WEIGHT_OPS", "channel_rows", "dequantized_weight",
           "finest_exponent", "fit_power_of_two", "from_channel_rows", "int8_tensor_reasons",
           "int8_weight_ops", "read_int8_metadata", "rewrite_weight", "widest_codes",
           "write_int8_metadata"]
