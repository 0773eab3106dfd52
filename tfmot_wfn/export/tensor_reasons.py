"""Why a constant tensor of an exported model is not palette-indexed, using the Keras model.

The converter renames and transposes weights, so a TFLite constant is matched
to its Keras origin by its sorted values (layout-independent): a raw weight, a
kernel or bias with a BatchNorm folded in by the converter, or a standalone
BatchNorm's scale/shift.

```python
explain = keras_explainer(plain_model, palette)
data, meta, indexed, others = encode_palette(tflite_bytes, palette, explain=explain)
print(others[0].reason)   # "BatchNorm 'bn1' folded into 'conv1': values are not in the palette ..."
```
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfmot_wfn.keras.batchnorm_folding import (
    batchnorm_scale_shift, foldable_layer_pairs, folded_weights, is_depthwise, is_transposed,
)
from tfmot_wfn.keras.cloning import is_functional_or_sequential, walk_layers
from tfmot_wfn.keras.report import layer_weights
from tfmot_wfn.tflite.palette_encoding import ConstantTensor, Explainer, generic_reason

#: How to get palette kernels where the converter folds a BatchNorm (shown in the reasons).
FOLD_HINT = "apply tfmot_wfn.lite.fold_batchnorm to the float model before fix_weights"


@dataclasses.dataclass(frozen=True)
class _Origin:
    sorted_values: np.ndarray
    reason: str
    exact: bool
    bias_only: bool = False  # a folded bias: only an op's bias input can be it
    label: str = ""  # the short name of a compact file, e.g. "conv1/kernel"
    channels: Optional[np.ndarray] = None  # exact kernels: sorted values per output channel


def _batchnorms(model):
    return (layer for layer in walk_layers(model, descend=is_functional_or_sequential)
            if type(layer).__name__ == "BatchNormalization")


def _origins(model) -> Dict[int, List[_Origin]]:
    found: Dict[int, List[_Origin]] = {}

    def add(values, reason, exact, label, bias_only=False, channels=None):
        flat = np.sort(np.asarray(values, np.float32).ravel())
        found.setdefault(flat.size, []).append(
            _Origin(flat, reason, exact, bias_only, label, channels))

    # Exact Keras weights first: a palette weight is labelled by the weight it is.
    try:
        rows = layer_weights(model)
    except ValueError:
        rows = []
    transposed = {layer.name for layer in walk_layers(model, descend=is_functional_or_sequential)
                  if is_transposed(layer)}
    for layer_name, weight_path, values, _ in rows:
        kind = "bias" if weight_path.endswith("bias") else "weight"
        add(values, f"{kind} {weight_path!r} of layer {layer_name!r}", True, weight_path,
            channels=_channel_rows(values, weight_path.endswith("depthwise_kernel"),
                                   transposed=layer_name in transposed))
    for layer, bn in foldable_layer_pairs(model):
        values = folded_weights(layer, bn)
        for name, v in values.items():
            if name == "bias":
                add(v, f"bias of size {v.size} not in palette: BatchNorm {bn.name!r} shift folded "
                       f"into {layer.name!r} by the converter", False, f"{layer.name}/bias",
                    bias_only=True)
            elif name != "depthwise_kernel" or is_depthwise(layer):
                add(v, f"BatchNorm {bn.name!r} folded into {layer.name!r}: values are not in the "
                       f"palette ({FOLD_HINT})", False, f"{layer.name}/{name}")
    # Standalone BatchNorms, and those the converter did not fold after all (e.g. Conv3D).
    for bn in _batchnorms(model):
        scale, shift = batchnorm_scale_shift(bn)
        add(scale, f"BatchNorm {bn.name!r} scale gamma/sqrt(var+eps): moving statistics are "
                   "not fixed weights", False, f"{bn.name}/scale")
        add(shift, f"BatchNorm {bn.name!r} shift beta-mean*scale: moving statistics are not "
                   "fixed weights", False, f"{bn.name}/shift")
    return found


def _matches(origin: _Origin, values: np.ndarray) -> bool:
    if origin.exact:
        return bool(np.array_equal(origin.sorted_values, values))
    return bool(np.allclose(origin.sorted_values, values, rtol=1e-4, atol=1e-6))


def _match(origins: Dict[int, List[_Origin]], t: ConstantTensor) -> Optional[_Origin]:
    if t.values is None:
        return None
    values = np.sort(t.values.ravel())
    candidates = origins.get(values.size, [])
    for exact_only in (True, False):  # an exact weight wins over an approximate folding
        for origin in candidates:
            if origin.exact != exact_only or (origin.bias_only and not t.is_bias):
                continue
            if _matches(origin, values):
                return origin
    return None


#: Channel axis of an op's weight (input 1) in the TFLite layout; Keras kernels keep it last
#: (transposed convolutions: second to last).
_CHANNEL_AXIS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": -1, "CONV_3D": -1,
                 "TRANSPOSE_CONV": 0}


def _channel_rows(values: np.ndarray, depthwise: bool, transposed: bool = False) -> Optional[np.ndarray]:
    """A Keras kernel as sorted rows, one per output channel (None for vectors)."""
    w = np.asarray(values, np.float32)
    if w.ndim < 2:
        return None
    if depthwise:  # (..., in, multiplier) -> (..., in * multiplier), as TFLite stores it
        w = w.reshape(w.shape[:-2] + (-1,))
    axis = -2 if transposed and w.ndim >= 3 else -1
    return np.sort(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1), axis=1)


def _scale_factors(origin_rows: np.ndarray, rows: np.ndarray) -> Optional[np.ndarray]:
    """``c`` per row with ``rows[i] == c[i] * origin_rows[i]`` (both sorted), or None."""
    factors = []
    for o, t in zip(origin_rows.astype(np.float64), rows.astype(np.float64)):
        big = int(np.argmax(np.abs(o)))
        if o[big] == 0:
            if np.any(t):
                return None
            factors.append(np.nan)
            continue
        for candidate in (t, t[::-1]):  # c < 0 reverses the order
            c = candidate[big] / o[big]
            if c != 0 and np.allclose(candidate, c * o, rtol=1e-5, atol=1e-6 * abs(c * o[big])):
                factors.append(c)
                break
        else:
            return None
    return np.asarray(factors)


def _match_scaled(origins: Dict[int, List[_Origin]], t: ConstantTensor
                  ) -> Optional[Tuple[_Origin, np.ndarray]]:
    """``(origin, factors)``: a Keras weight that ``t`` is a multiple of, as a whole or per
    output channel (the converter folded constant multiplications into it, e.g.
    EfficientNet's input Rescaling/Normalization and then the BatchNorm into its first
    convolution), or None."""
    if t.values is None or t.elements < 16:
        return None
    values = np.asarray(t.values, np.float64)
    axis = next((_CHANNEL_AXIS[op] for op, slot in t.consumers
                 if slot == 1 and op in _CHANNEL_AXIS), None)
    rows = None
    if axis is not None and values.ndim >= 2:
        rows = np.sort(np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1), axis=1)
    for origin in origins.get(values.size, []):
        if not origin.exact or origin.bias_only:
            continue
        factors = _scale_factors(origin.sorted_values[None], np.sort(values.ravel())[None])
        if factors is None and rows is not None and origin.channels is not None \
                and origin.channels.shape == rows.shape and rows.shape[1] >= 4:
            factors = _scale_factors(origin.channels, rows)
        if factors is not None:
            return origin, factors
    return None


def keras_explainer(model, origins: Optional[Dict[int, List[_Origin]]] = None) -> Explainer:
    """An explainer naming the Keras layer (and folded BatchNorm) a constant came from.

    Falls back to `generic_reason` for constants it cannot match.
    """
    origins = _origins(model) if origins is None else origins

    def explain(t: ConstantTensor) -> Optional[str]:
        if t.values is None or t.outside_palette <= 0:
            return None
        origin = _match(origins, t)
        if origin is not None:
            if not origin.exact:
                return origin.reason
            outside = f"{t.outside_palette} of {t.elements} values are not in the palette"
            if t.is_bias:
                return f"bias of size {t.elements} not in palette: {origin.reason}, {outside}"
            return f"not fixed: {origin.reason}, {outside}"
        if t.is_bias:
            return generic_reason(t)
        scaled = _match_scaled(origins, t)
        if scaled is not None:
            factors = scaled[1][np.isfinite(scaled[1])]
            how = (f"multiplied by {factors[0]:.6g}" if np.ptp(factors) <= 1e-6 * abs(factors[0])
                   else f"multiplied per output channel by {factors.min():.4g} to "
                        f"{factors.max():.4g}")
            return (f"{scaled[0].reason} {how} by the converter (it folded constant scalings "
                    "into it, e.g. an input Rescaling/Normalization before the layer and its "
                    f"BatchNorm): {t.outside_palette} of {t.elements} values are not in the "
                    "palette")
        return (f"no weight of the Keras model has these values (a graph constant such as an "
                f"epsilon, or a weight the converter transformed): {t.outside_palette} of "
                f"{t.elements} values are not in the palette")

    return explain


def keras_labeler(model, origins: Optional[Dict[int, List[_Origin]]] = None):
    """Short tensor names for a compact export: the Keras weight a float constant holds.

    ``"conv1/kernel"`` (the weight's path) for a weight stored as it is in Keras,
    ``"conv1/kernel"``/``"conv1/bias"`` for one with a BatchNorm folded in by the
    converter, ``"bn/scale"``/``"bn/shift"`` for a standalone BatchNorm; None for a
    constant it cannot match (left unnamed).
    """
    origins = _origins(model) if origins is None else origins

    def label(t: ConstantTensor) -> Optional[str]:
        origin = _match(origins, t)
        if origin is None and not t.is_bias:
            scaled = _match_scaled(origins, t)
            origin = scaled[0] if scaled is not None else None
        return (origin.label or None) if origin is not None else None

    return label


def keras_origins(model) -> Dict[int, List[_Origin]]:
    """The Keras origins `keras_explainer` and `keras_labeler` match against (shareable)."""
    return _origins(model)
