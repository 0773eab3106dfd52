"""The whole-network fixing stage over every `WeightFixingWrapper` of a model.

Gathers all fixable weights of the network into one vector, runs the numpy
greedy stage (`tfmot_wfn.core.fixing_stage`) once, and writes masks, fixed
values and the shared palette back into the wrappers' variables.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence

import numpy as np

from tfmot_wfn.core.greedy_fixing import fixing_stage
from tfmot_wfn.keras.compat import keras
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


def _check_finite(wrappers: Sequence[WeightFixingWrapper], arrays) -> None:
    for wrapper, layer_arrays in zip(wrappers, arrays):
        for v, a in zip(wrapper.fixable_variables, layer_arrays):
            bad = int(np.count_nonzero(~np.isfinite(a)))
            if bad:
                raise FloatingPointError(
                    f"{bad} of {a.size} values of weight {v.path!r} in layer {wrapper.layer.name!r} "
                    "are NaN or Inf, so they cannot be fixed. Training diverged: lower the "
                    "learning rate or clip gradients (e.g. optimizer clipnorm=0.5), then resume "
                    "from the last checkpoint.")


def run_fixing_stage(model_or_wrappers, fraction: float, distance: float) -> StageSummary:
    """Fix `fraction` of all fixable weights of the network, in one greedy stage.

    Weights already fixed stay fixed at their values. Every wrapper receives the
    same palette. Nothing is written if the stage fails.
    """
    wrappers = (list(model_or_wrappers) if isinstance(model_or_wrappers, (list, tuple))
                else wrappers_of(model_or_wrappers))
    if not wrappers:
        raise ValueError("No WeightFixingWrapper found; build the model with tfmot_wfn.fix_weights.")
    arrays = [w.effective_numpy() for w in wrappers]
    masks = [w.mask_numpy() for w in wrappers]
    _check_finite(wrappers, arrays)
    flat_w = np.concatenate([a.astype(np.float32).ravel() for layer in arrays for a in layer])
    flat_m = np.concatenate([m.ravel() for layer in masks for m in layer])
    capacity = wrappers[0].palette_capacity
    previous = _palette_numpy(wrappers[0])
    result = fixing_stage(flat_w, flat_m, fraction, distance,
                          wrappers[0].zero_distance, palette=previous)
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
            wrapper.fixed_values[i].assign(np.where(mask, values, 0).astype(v.dtype))
            wrapper.masks[i].assign(mask)
            # The underlying variable takes the fixed values too, so the model
            # holds them even outside the wrapper.
            v.assign(np.where(mask, values, v.numpy()).astype(v.dtype))
        wrapper.palette.assign(padded)
        wrapper.palette_size.assign(np.int32(result.palette.size))
    return StageSummary(
        fraction=float(fraction), distance=float(distance), total=int(flat_w.size),
        fixed=int(result.fixed.sum()), newly_fixed=result.newly_fixed,
        palette_size=int(result.palette.size), steps=result.steps, max_order=result.max_order)


def _palette_numpy(wrapper: WeightFixingWrapper) -> np.ndarray:
    size = int(wrapper.palette_size.numpy())
    return wrapper.palette.numpy()[:size]
