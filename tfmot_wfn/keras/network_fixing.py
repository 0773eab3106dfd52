"""The whole-network fixing stage over every `WeightFixingWrapper` of a model.

Gathers all fixable weights of the network into one vector, runs the numpy
greedy stage (`tfmot_wfn.core.fixing_stage`) once, and writes masks, fixed
values and the shared palette back into the wrappers' variables.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import List, Optional, Sequence

import numpy as np

from tfmot_wfn.core.greedy_fixing import fixing_stage
from tfmot_wfn.keras import regularizer_table
from tfmot_wfn.keras.compat import autocasts, keras, numpy_dtype, tf, variable_path
from tfmot_wfn.keras.fixing_wrapper import WeightFixingWrapper


def wrappers_of(model_or_layers) -> List[WeightFixingWrapper]:
    """Every `WeightFixingWrapper` in a model (nested models included) or list of layers."""
    found: List[WeightFixingWrapper] = []
    seen = set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, WeightFixingWrapper):
            found.append(layer)
        elif isinstance(layer, keras.Model) or hasattr(layer, "layers"):
            for sub in getattr(layer, "layers", []):
                visit(sub)

    if isinstance(model_or_layers, (list, tuple)):
        for item in model_or_layers:
            visit(item)
    else:
        visit(model_or_layers)
    return found


@dataclasses.dataclass
class StageSummary:
    """What one network-wide fixing stage did."""

    fraction: float
    distance: float
    total: int
    fixed: int
    newly_fixed: int
    palette_size: int
    steps: int
    max_order: int


def is_wrapped(model) -> bool:
    """True for a model made by `tfmot_wfn.fix_weights` (it holds WeightFixingWrapper layers)."""
    return bool(wrappers_of(model))


def _check_finite(wrappers: Sequence[WeightFixingWrapper], arrays) -> None:
    for wrapper, layer_arrays in zip(wrappers, arrays):
        for v, a in zip(wrapper.fixable_variables, layer_arrays):
            bad = int(np.count_nonzero(~np.isfinite(a)))
            if bad:
                raise FloatingPointError(
                    f"{bad} of {a.size} values of weight {variable_path(v)!r} in layer {wrapper.layer.name!r} "
                    "are NaN or Inf, so they cannot be fixed. Training diverged: lower the "
                    "learning rate or clip gradients (e.g. optimizer clipnorm=0.5), then resume "
                    "from the last checkpoint.")


def _number(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > low and (high is None or value <= high)):
        bound = f"in ({low}, {high}]" if high is not None else f"> {low}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def _finfo(dtype):
    """`finfo` for numpy and ml_dtypes floats (bfloat16 is not a numpy dtype)."""
    import ml_dtypes  # a TensorFlow dependency

    return ml_dtypes.finfo(dtype)


def _narrow_dtype(wrapper, variable) -> Optional[np.dtype]:
    """The float dtype narrower than the variable's in which the layer computes with it, or None.

    Under a mixed precision policy (``mixed_float16``, ``mixed_bfloat16``) a layer
    keeps float32 variables and reads them cast to its compute dtype, unless the
    variable opts out of autocasting (BatchNormalization's gamma/beta do).
    """
    if not autocasts(variable):
        return None
    compute = tf.dtypes.as_dtype(wrapper.layer.compute_dtype)
    stored = tf.dtypes.as_dtype(variable.dtype)
    if not compute.is_floating or compute.size >= stored.size:
        return None
    return np.dtype(compute.as_numpy_dtype)


def _round_for_compute_dtypes(wrappers, values, fixed, newly) -> np.ndarray:
    """Make fixed values exactly representable in every compute dtype that reads them.

    The palette is shared network-wide, so newly fixed values are rounded (to
    nearest) to each narrower compute dtype used anywhere in the network, coarsest
    last; a value that is 0 or a sum of a few powers of two within range is left
    unchanged (almost all are). Previously fixed values are never changed; if one
    is not representable (the model was fixed under another policy), or a value is
    out of the dtype's range, this raises instead.
    """
    narrow = {}
    offset = 0
    spans = []
    for wrapper in wrappers:
        for v in wrapper.fixable_variables:
            n = int(np.prod(v.shape))
            dtype = _narrow_dtype(wrapper, v)
            if dtype is not None:
                narrow.setdefault(dtype, wrapper)
                spans.append((offset, offset + n, dtype, wrapper, v))
            offset += n
    if not narrow:
        return values
    values = values.copy()
    # Coarsest last: fewer mantissa bits, then a smaller range.
    order = sorted(narrow, key=lambda d: (_finfo(d).nmant, float(_finfo(d).max)), reverse=True)
    with np.errstate(over="ignore"):
        for dtype in order:
            values[newly] = values[newly].astype(dtype).astype(np.float32)
    for start, stop, dtype, wrapper, v in spans:
        part, mask = values[start:stop], fixed[start:stop]
        with np.errstate(over="ignore"):
            exact = part.astype(dtype).astype(np.float32) == part
        bad = mask & ~exact
        if bad.any():
            example = float(part[bad][0])
            raise FloatingPointError(
                f"Fixed value {example!r} of weight {variable_path(v)!r} in layer "
                f"{wrapper.layer.name!r} is not exactly representable in "
                f"{np.dtype(dtype).name}, the dtype the layer computes in (largest finite "
                f"value {float(_finfo(dtype).max)!r}). Either the weights are "
                "too large for this mixed precision policy, or the model was fixed under another "
                "policy: use the same policy for the whole run, or keep this layer in float32 "
                "(dtype='float32').")
    return values


def run_fixing_stage(model_or_wrappers, fraction: float, distance: float) -> StageSummary:
    """Fix `fraction` of all fixable weights of the network, in one greedy stage.

    Weights already fixed stay fixed at their values. Every wrapper receives the
    same palette. Nothing is written if the stage fails.

    With ``fix_weights(..., preserve_sparsity=True)`` the zeros of the model were
    fixed to 0 before the first stage (a fraction ``s`` of all fixable weights),
    and `fraction` applies to the other weights: the stage fixes
    ``s + (1 - s) * fraction`` of all of them, so that a pruned model goes through
    the same staircase on its non-zero weights as a dense one (``1.0`` still fixes
    everything).

    Under a mixed precision policy the newly fixed values are rounded to the
    narrowest compute dtype of the network (a no-op for almost every value, and a
    relative change of at most 2**-11 for float16, 2**-8 for bfloat16 otherwise),
    so that the layers compute with exactly the palette values.

    Raises:
      TypeError / ValueError: bad `fraction` or `distance`, no wrapper, or no
        fixable weight.
      FloatingPointError: NaN or Inf among the weights (names the layer), or a
        value not representable in a layer's compute dtype.
    """
    fraction = _number("fraction", fraction, 0.0, 1.0)
    distance = _number("distance", distance, 0.0)
    if isinstance(model_or_wrappers, WeightFixingWrapper):
        model_or_wrappers = [model_or_wrappers]
    wrappers = (list(model_or_wrappers) if isinstance(model_or_wrappers, (list, tuple))
                else wrappers_of(model_or_wrappers))
    if not wrappers:
        raise ValueError("No WeightFixingWrapper found; build the model with tfmot_wfn.fix_weights.")
    arrays = [w.effective_numpy() for w in wrappers]
    if not any(a.size for layer in arrays for a in layer):
        raise ValueError(
            "The wrappers hold no fixable weight (e.g. only BatchNormalization with "
            "fix_batchnorm=False, or layers without weights): there is nothing to fix.")
    masks = [w.mask_numpy() for w in wrappers]
    _check_finite(wrappers, arrays)
    flat_w = np.concatenate([a.astype(np.float32).ravel() for layer in arrays for a in layer])
    flat_m = np.concatenate([m.ravel() for layer in masks for m in layer])
    capacity = wrappers[0].palette_capacity
    previous = _palette_numpy(wrappers[0])
    preserved = sum(int(w.preserved_zeros.numpy()) for w in wrappers
                    if getattr(w, "preserved_zeros", None) is not None)
    if preserved and fraction < 1.0:
        share = min(1.0, preserved / flat_w.size)
        fraction = min(1.0, share + (1.0 - share) * fraction)
    result = fixing_stage(flat_w, flat_m, fraction, distance,
                          wrappers[0].zero_distance, palette=previous)
    rounded = _round_for_compute_dtypes(wrappers, result.values, result.fixed,
                                        result.fixed & ~flat_m)
    if rounded is not result.values:
        result = dataclasses.replace(result, values=rounded,
                                     palette=np.unique(rounded[result.fixed]))
    if result.palette.size > capacity:
        raise ValueError(
            f"The palette has {result.palette.size} values, more than palette_capacity="
            f"{capacity}. Use a larger distance, or fix_weights(..., palette_capacity=...).")
    padded = np.zeros(capacity, np.float32)
    padded[: result.palette.size] = result.palette
    offset = 0
    for wrapper in wrappers:
        for i, v in enumerate(wrapper.fixable_variables):
            n = int(np.prod(v.shape))
            values = result.values[offset:offset + n].reshape(tuple(v.shape))
            mask = result.fixed[offset:offset + n].reshape(tuple(v.shape))
            offset += n
            wrapper.fixed_values[i].assign(np.where(mask, values, 0).astype(numpy_dtype(v)))
            wrapper.masks[i].assign(mask)
            # The underlying variable takes the fixed values too, so the model
            # holds them even outside the wrapper.
            v.assign(np.where(mask, values, v.numpy()).astype(numpy_dtype(v)))
        wrapper.palette.assign(padded)
        wrapper.palette_size.assign(np.int32(result.palette.size))
    # The regulariser's table follows the new palette and masks.
    regularizer_table.refresh_tables(wrappers)
    return StageSummary(
        fraction=float(fraction), distance=float(distance), total=int(flat_w.size),
        fixed=int(result.fixed.sum()), newly_fixed=result.newly_fixed,
        palette_size=int(result.palette.size), steps=result.steps, max_order=result.max_order)


def _palette_numpy(wrapper: WeightFixingWrapper) -> np.ndarray:
    size = int(wrapper.palette_size.numpy())
    return wrapper.palette.numpy()[:size]
