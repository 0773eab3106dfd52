"""Keep a BatchNorm's scale as a separate MUL so the conv before it stays palette-indexed.

The TFLite converter folds an inference-mode BatchNorm into the preceding
Conv/DepthwiseConv/Dense/TransposeConv: the stored weight is ``F = W * s`` with the per
output channel scale ``s = gamma / sqrt(moving_var + eps)``, which turns the
palette values ``W`` into arbitrary floats. This module undoes that on the
converted flatbuffer, for each such layer whose Keras kernel ``W`` is all
palette values:

* the op's weight is set back to ``W`` (so `encode_palette` stores it as
  palette indices),
* its bias becomes ``b_new = b_folded / s`` and its fused activation is removed,
* a ``MUL`` by the float32 constant ``s`` (shape ``[C]``, broadcast on the last
  axis) follows it and carries the fused activation, so
  ``act((conv(x, W) + b_new) * s) == act(conv(x, F) + b_folded)``.

``s`` is recovered exactly as the converter rounded it (per channel, the float32
value with ``float32(W * s) == F`` for every weight), and ``b_new`` is chosen so
that ``float32(b_new * s) == b_folded``: `fold_scale_ops` (used by
`decode_palette`, the ``load_interpreter(decode=True)`` fast path) multiplies the
MUL back into the static weights and gets the converter's folded weights bit
for bit.

A channel with ``|s| < MIN_SCALE`` (e.g. gamma fixed to 0) has no finite
``b_new``; such a layer keeps the folded, non-palette weights, with the reason.

```python
data, kept, reasons = keep_batchnorm_scales(float_tflite, plain_model)
data, meta, indexed, others = encode_palette(data, palette, batchnorm_scales=kept, ...)
```
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfmot_wfn.core.batchnorm_affine import float32_batchnorm_scale
from tfmot_wfn.export.tensor_reasons import FOLD_HINT
from tfmot_wfn.keras.batchnorm_folding import (
    batchnorm_scale_shift, batchnorm_values, foldable_layer_pairs, is_depthwise, is_transposed,
    kernel_key,
)
from tfmot_wfn.keras.compat import short_name
from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.scale_ops import (
    HOST_OPS, MIN_SCALE, SCALE_PREFIX, SCALE_REASON, UNSCALED_SUFFIX, KeptScale,
    bias_slot, channels_last, from_channels_last, host_weight, mul_op, optional_bias, set_constant,
    unique_tensor_name,
)

_MATCH_RTOL = 1e-5

# ---------------------------------------------------------------- Keras side
@dataclasses.dataclass
class _Pair:
    """A layer and the BatchNorm the converter folds into it, with the numbers the match needs."""

    layer: object
    bn: object
    kernel: np.ndarray       # (elements per channel, C), Keras order, float32
    scale64: np.ndarray      # (C,) float64
    scale_tf: np.ndarray     # (C,) float32 as TensorFlow rounds gamma * rsqrt(var + eps)
    uniques: np.ndarray      # sorted unique kernel values (float64)
    in_palette: bool


def _keras_pairs(model, palette: np.ndarray) -> List[_Pair]:
    pairs = []
    for layer, bn in foldable_layer_pairs(model):
        values = {short_name(v): np.asarray(v.numpy(), np.float32) for v in layer.weights}
        key = kernel_key(layer, values)
        if key not in values:
            continue
        kernel = values[key]
        if is_depthwise(layer):  # (..., in, multiplier): channel = in * mult + m
            kernel = kernel.reshape(kernel.shape[:-2] + (-1,))
        elif is_transposed(layer):  # (..., out, in): channels last
            kernel = np.moveaxis(kernel, -2, -1)
        scale64, _ = batchnorm_scale_shift(bn)
        channels = scale64.size
        if kernel.shape[-1] != channels:
            continue
        bn32 = batchnorm_values(bn, np.float32)
        flat = kernel.reshape(-1, channels)
        pal_pos = np.minimum(np.searchsorted(palette, flat.ravel()), palette.size - 1)
        pairs.append(_Pair(
            layer=layer, bn=bn, kernel=flat, scale64=scale64,
            scale_tf=float32_batchnorm_scale(bn32["gamma"], bn32["moving_variance"], bn.epsilon),
            uniques=np.unique(flat).astype(np.float64),
            in_palette=bool(palette.size and np.all(palette[pal_pos] == flat.ravel()))))
    return pairs


# ------------------------------------------------------- matching the file
def _snap(folded: np.ndarray, pair: _Pair, usable: np.ndarray) -> Optional[np.ndarray]:
    """``W`` (channels last, float32) with ``folded ~= W * s``, or None when it does not fit."""
    u = pair.uniques
    if not usable.all():  # channels with s ~ 0 hold ~0 (all of them: this alone is no match)
        limit = MIN_SCALE * max(1.0, float(np.abs(pair.kernel).max(initial=0.0)))
        if not usable.any() or not np.all(np.abs(folded[:, ~usable]) <= limit):
            return None
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = folded[:, usable].astype(np.float64) / pair.scale64[usable]
    pos = np.clip(np.searchsorted(u, ratio), 1, max(u.size - 1, 1))
    lower, upper = u[pos - 1], u[np.minimum(pos, u.size - 1)]
    nearest = np.where(np.abs(ratio - lower) <= np.abs(upper - ratio), lower, upper)
    if not np.all(np.abs(nearest - ratio) <= _MATCH_RTOL * np.abs(ratio) + 1e-30):
        return None
    snapped = np.zeros(folded.shape, np.float32)
    snapped[:, usable] = nearest.astype(np.float32)
    # Same values per channel as the Keras kernel: this op is this layer.
    if not np.array_equal(np.sort(snapped[:, usable], axis=0),
                          np.sort(pair.kernel[:, usable], axis=0)):
        return None
    return snapped


def _ulp_neighbours(values: np.ndarray, steps: int = 2) -> List[np.ndarray]:
    out, up, down = [values], values, values
    for _ in range(steps):
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
        out.extend([up, down])
    return out


def _exact_scale(kernel: np.ndarray, folded: np.ndarray, pair: _Pair) -> Tuple[np.ndarray, bool]:
    """Per channel, the float32 ``s`` with ``float32(kernel * s) == folded`` (else the nearest)."""
    channels = folded.shape[1]
    rows = np.argmax(np.abs(kernel), axis=0)
    w_max = kernel[rows, np.arange(channels)]
    with np.errstate(divide="ignore", invalid="ignore"):
        from_file = np.where(w_max != 0, folded[rows, np.arange(channels)] / w_max,
                             pair.scale_tf).astype(np.float32)
    candidates = []
    for base in (pair.scale_tf, pair.scale64.astype(np.float32), from_file):
        candidates.extend(_ulp_neighbours(base.astype(np.float32)))
    best = pair.scale64.astype(np.float32)
    best_error = np.full(channels, np.inf)
    for cand in candidates:
        error = np.abs(kernel * cand - folded).max(axis=0) if kernel.size else np.zeros(channels)
        better = error < best_error
        best, best_error = np.where(better, cand, best), np.where(better, error, best_error)
    return best.astype(np.float32), bool(np.all(best_error == 0))


def _exact_quotient(bias: np.ndarray, scale: np.ndarray) -> Tuple[np.ndarray, bool]:
    """float32 ``q`` with ``float32(q * scale) == bias`` where one exists near ``bias / scale``."""
    base = (bias.astype(np.float64) / scale.astype(np.float64)).astype(np.float32)
    best, best_error = base, np.abs(base * scale - bias)
    for cand in _ulp_neighbours(base):
        error = np.abs(cand * scale - bias)
        better = error < best_error
        best, best_error = np.where(better, cand, best), np.where(better, error, best_error)
    return best.astype(np.float32), bool(np.all(best_error == 0))


def _fallback_reason(pair: _Pair, tiny: np.ndarray) -> str:
    smallest = float(np.min(np.abs(pair.scale64[tiny])))
    return (f"BatchNorm {pair.bn.name!r} folded into {pair.layer.name!r}: its scale "
            f"gamma/sqrt(var+eps) is {smallest:.3g} (|s| < {MIN_SCALE:g}) in "
            f"{int(np.count_nonzero(tiny))} of {tiny.size} channels, so it is not kept as a "
            f"separate MUL (the bias b/s would not be finite); values are not in the palette "
            f"({FOLD_HINT})")


@dataclasses.dataclass
class _Match:
    """A host op of the file whose folded weight is ``pair``'s kernel times its scale."""

    pair: _Pair
    op_name: str
    weight: np.ndarray    # the op's folded weight, TFLite layout
    axis: int             # its output-channel axis
    folded: np.ndarray    # the folded weight, channels last
    snapped: np.ndarray   # the Keras (palette) kernel, channels last
    tiny: np.ndarray      # channels whose |scale| < MIN_SCALE


# ------------------------------------------------------- rewriting the file
class _ScaleRewrite:
    """Rewrites the matched host ops of one flatbuffer; collects the kept scales and reasons."""

    def __init__(self, fbm, pairs: List[_Pair]):
        self.fbm = fbm
        self.unmatched = list(pairs)
        self.kept: List[KeptScale] = []
        self.reasons: Dict[Tuple[int, str], str] = {}
        self.replaced_buffers = set()

    def subgraph(self, s: int, subgraph) -> None:
        """Rewrite every matched op of ``subgraph``; each MUL goes right after its op."""
        muls: Dict[int, object] = {}
        readers = fb.consumers(subgraph)
        for pos, op in enumerate(subgraph.operators or []):
            match = self._match(subgraph, op)
            if match is not None:
                mul = self._keep_scale(s, subgraph, op, match, readers)
                if mul is not None:
                    muls[pos] = mul
        if muls:
            ops = []
            for pos, op in enumerate(subgraph.operators):
                ops.append(op)
                if pos in muls:
                    ops.append(muls[pos])
            subgraph.operators = ops

    def free_replaced_buffers(self) -> None:
        """Empty the buffers of the replaced weights and biases that nothing reads any more."""
        for b in self.replaced_buffers - fb.referenced_buffers(self.fbm):
            if b > 0:
                self.fbm.buffers[b].data = None

    def _match(self, subgraph, op) -> Optional[_Match]:
        """The still unmatched pair whose kernel ``op``'s weight is (the pair is taken)."""
        name = fb.op_name(self.fbm, op)
        if name not in HOST_OPS or not self.unmatched:
            return None
        weight = host_weight(self.fbm, subgraph, op)
        if weight is None or weight.ndim < 2:
            return None
        axis = HOST_OPS[name]
        folded = channels_last(weight, axis)
        for pair in self.unmatched:
            if folded.shape != pair.kernel.shape:
                continue
            tiny = ~(np.abs(pair.scale64) >= MIN_SCALE)  # NaN counts as tiny
            snapped = _snap(folded, pair, ~tiny)
            if snapped is not None:
                self.unmatched.remove(pair)
                return _Match(pair, name, weight, axis, folded, snapped, tiny)
        return None

    def _keep_scale(self, s: int, subgraph, op, match: _Match, readers):
        """Palette weight, bias / s and a MUL by s for ``op``; None (with the reason) if not."""
        pair, tiny = match.pair, match.tiny
        weight_name = fb.tensor_name(subgraph.tensors[int(op.inputs[1])])
        usable, bias = optional_bias(self.fbm, subgraph, op)
        if tiny.any() or not usable:
            self.reasons[(s, weight_name)] = _fallback_reason(pair, tiny) if tiny.any() else (
                f"BatchNorm {pair.bn.name!r} folded into {pair.layer.name!r}: the op's "
                "bias is not a float32 constant, so the scale is not kept as a MUL")
            return None
        scale, exact = _exact_scale(match.snapped, match.folded, pair)
        bias_name = ""
        if bias is not None:
            new_bias, bias_exact = _exact_quotient(bias, scale)
            if not np.all(np.isfinite(new_bias)):
                self.reasons[(s, weight_name)] = (
                    f"BatchNorm {pair.bn.name!r} folded into {pair.layer.name!r}: the "
                    "bias divided by its scale is not finite in float32, so the scale is "
                    "not kept as a separate MUL; values are not in the palette")
                return None
            exact = exact and bias_exact
            bias_name = self._replace(subgraph, op, bias_slot(self.fbm, op), new_bias, readers)
            self.reasons[(s, bias_name)] = (
                f"bias of size {new_bias.size} not in palette: BatchNorm "
                f"{pair.bn.name!r} shift divided by its scale (kept as a separate MUL "
                f"after {pair.layer.name!r})")
        weight_name = self._replace(
            subgraph, op, 1, from_channels_last(match.snapped, match.weight.shape, match.axis),
            readers)
        scale_name, mul = self._scale_after(subgraph, op, scale, pair.bn.name)
        self.reasons[(s, scale_name)] = SCALE_REASON
        self.kept.append(KeptScale(
            subgraph=s, layer=pair.layer.name, batchnorm=pair.bn.name, op=match.op_name,
            channels=int(scale.size), weight=weight_name, bias=bias_name,
            scale=scale_name, exact=exact))
        return mul

    def _replace(self, subgraph, op, slot: int, values: np.ndarray, readers) -> str:
        """Give ``op``'s input ``slot`` the constant ``values``; returns the tensor's name."""
        self.replaced_buffers.add(int(subgraph.tensors[int(op.inputs[slot])].buffer))
        return set_constant(self.fbm, subgraph, op, slot, values, readers)

    def _scale_after(self, subgraph, op, scale: np.ndarray, batchnorm: str):
        """``op -> unscaled tensor -> MUL(s, op's activation) -> op's output``: (s's name, MUL)."""
        out_index = int(op.outputs[0])
        out = subgraph.tensors[out_index]
        unscaled = fb.add_tensor(
            subgraph, unique_tensor_name(subgraph, fb.tensor_name(out) + UNSCALED_SUFFIX),
            fb.tensor_shape(out), out.type)
        if out.shapeSignature is not None:
            subgraph.tensors[unscaled].shapeSignature = np.array(out.shapeSignature)
        scale_name = unique_tensor_name(subgraph, SCALE_PREFIX + batchnorm)
        scale_index = fb.add_tensor(
            subgraph, scale_name, [scale.size], fb.type_value("FLOAT32"),
            fb.add_buffer(self.fbm, scale.astype("<f4").tobytes()))
        activation = int(op.builtinOptions.fusedActivationFunction)
        op.builtinOptions.fusedActivationFunction = fb.schema().ActivationFunctionType.NONE
        op.outputs[0] = unscaled
        return scale_name, mul_op(self.fbm, [unscaled, scale_index], [out_index], activation)


def keep_batchnorm_scales(
    tflite: bytes, model, palette,
) -> Tuple[bytes, List[KeptScale], Dict[Tuple[int, str], str]]:
    """Rewrite converter-folded BatchNorms of ``tflite`` into palette weight + ``MUL`` by ``s``.

    Args:
      tflite: float TFLite bytes of ``model`` (from `convert_to_tflite`).
      model: the plain Keras model it was converted from (its kernels are palette values).
      palette: the network palette; layers whose kernel is not all palette values
        are left folded.

    Returns:
      ``(bytes, kept scales, reasons)``: ``reasons`` maps ``(subgraph, tensor name)``
      to the reason a tensor is not palette-indexed (the scale, the new bias, and the
      folded weight of a layer left folded because its scale is 0 or tiny).
    """
    pal = np.unique(np.asarray(palette, np.float32).ravel())
    pairs = [p for p in _keras_pairs(model, pal) if p.in_palette]
    if not pairs:
        return bytes(tflite), [], {}
    rewrite = _ScaleRewrite(fb.read_model(tflite), pairs)
    for s, subgraph in enumerate(rewrite.fbm.subgraphs):
        rewrite.subgraph(s, subgraph)
    rewrite.free_replaced_buffers()
    if not rewrite.kept:
        return bytes(tflite), [], rewrite.reasons
    return fb.write_model(rewrite.fbm), rewrite.kept, rewrite.reasons


__all__ = ["keep_batchnorm_scales"]
