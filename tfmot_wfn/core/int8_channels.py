"""The ``int8_exact`` constraint: every kernel output channel stays int8 codes times ONE 2^e.

Pure numpy. `fixing_stage` works on one flat, sorted pool of all the network's weights and
knows nothing of channels, so the constraint is not a filter inside its vote (a weight
whose nearest candidate is never allowed would never be fixed, and the greedy loop would
not end). It is a post-pass on each stage's result, `snap_stage`, applied to the weights
the stage has just fixed, before anything is written: fixed values are channel-exact when
they are fixed, and never move afterwards.

Per output channel of each kernel (`ChannelBlock`) and per stage:

* **The channel's step** ``2^e`` (`channel_exponents`): the finest power of two at which
  the channel's largest weight still fits, ``max|w| <= 127 * 2^e`` (free weights and the
  values just fixed count, so the range is reserved for the weights fixed later), but
  never finer than the finest power of two the channel's EARLIER-fixed values use (they
  must stay multiples of ``2^e``). The finest step that holds the largest weight rounds
  least: every value a coarser step represents (within the channel's range) a finer one
  represents too. The step is recomputed from the weights at every stage, so nothing is
  stored: it may get finer while the earlier-fixed values' codes stay within 127 (that
  bound is part of "holds the largest weight"), and coarser only as far as the
  earlier-fixed values allow. By induction every channel's fixed values are exact at the
  chosen step after every stage. (A model partly fixed WITHOUT the constraint may hold
  earlier-fixed values that are not exact; such a channel cannot become exact, and its
  new values are snapped at the step of its finest earlier-fixed value, codes clipped.)
* **Snapping**: a newly fixed value ``c`` (the stage's centre) that is not a multiple of
  ``2^e`` with code within 127 is moved to a representable value. Preferred: the
  palette value (or 0) representable at ``2^e`` nearest to ``c``, when it is within the
  stage's distance ``a`` of ``c`` (relative) or no farther than the nearest multiple; else
  the nearest multiple ``clip(rint(c / 2^e), -127, 127) * 2^e``, which becomes a new
  palette value. The centre is snapped, not each weight, so all weights a stage fixed to
  one centre in one channel get one value (fewer unique values). The palette stays one
  network-wide set (the unique fixed values).

Only kernels are constrained (Dense/Conv/separable/depthwise ``kernel``s, whose output
channels TFLite quantizes per channel); biases stay float32 at fixing (the int8 export
stores them as int32 at ``input_scale * weight_scale``), and BatchNorm gamma/beta,
embeddings and custom `FixableLayer` weights are left unconstrained.

```python
block = ChannelBlock(start=0, stop=12, channels=4)          # a (3, 4) Dense kernel
values, snapped = snap_stage(w, fixed_before, result.values, result.fixed, [block],
                             distance=0.015)
exact_channels(values, [block])                              # (4, 4) once all are fixed
```
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from tfmot_wfn.utils.power_of_two_codes import (
    MAX_CODE, fit_power_of_two, holding_exponents, value_exponents,
)

_NO_EXPONENT = np.iinfo(np.int64).max  # a channel with no non-zero fixed value


@dataclasses.dataclass(frozen=True)
class ChannelBlock:
    """One kernel in the network's flat weight vector, seen as ``(outer, channels, inner)``.

    Its values are ``flat[start:stop]`` in C order; output channel ``k`` is the middle
    axis. Dense/Conv kernels: ``channels`` = the last dimension, ``inner`` 1; depthwise
    kernels ``(..., in, multiplier)``: ``channels = in * multiplier``, ``inner`` 1;
    transposed convolutions ``(..., out, in)``: ``channels = out``, ``inner = in``.
    """

    start: int
    stop: int
    channels: int
    inner: int = 1

    def __post_init__(self):
        size, per = self.stop - self.start, self.channels * self.inner
        if self.channels < 1 or self.inner < 1 or size < per or size % per:
            raise ValueError(
                f"ChannelBlock [{self.start}, {self.stop}) of {size} values cannot hold "
                f"{self.channels} channels x {self.inner} inner values: give a block whose size "
                "is a multiple of channels * inner")

    def rows(self, flat: np.ndarray) -> np.ndarray:
        """The block's values as one row per output channel (a copy)."""
        part = np.asarray(flat)[self.start:self.stop]
        return part.reshape(-1, self.channels, self.inner).transpose(1, 0, 2).reshape(
            self.channels, -1)

    def put_rows(self, flat: np.ndarray, rows: np.ndarray) -> None:
        """Write `rows` (as from `rows`) back into ``flat[start:stop]``."""
        outer = (self.stop - self.start) // (self.channels * self.inner)
        flat[self.start:self.stop] = np.asarray(rows).reshape(
            self.channels, outer, self.inner).transpose(1, 0, 2).ravel()


def channel_exponents(weights: np.ndarray, fixed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The step exponent of each channel row for this stage (see the module docstring).

    `weights`: the channel rows before the stage (fixed entries hold their values);
    `fixed`: the entries fixed before the stage; `values`: the rows after it.
    """
    largest = np.maximum(np.abs(weights).max(axis=1, initial=0.0),
                         np.abs(values).max(axis=1, initial=0.0))
    wanted = holding_exponents(largest)
    finest_fixed = np.where(fixed & (weights != 0), value_exponents(weights), _NO_EXPONENT)
    return np.minimum(wanted, finest_fixed.min(axis=1, initial=_NO_EXPONENT))


def representable(values: np.ndarray, exponents: np.ndarray, max_code: int = MAX_CODE) -> np.ndarray:
    """``values`` is an integer multiple of ``2^exponents`` with ``|code| <= max_code`` (elementwise)."""
    codes = np.ldexp(np.asarray(values, np.float64), -np.asarray(exponents, np.int64))
    return (codes == np.rint(codes)) & (np.abs(codes) <= max_code)


def snap_values(centres: np.ndarray, exponents: np.ndarray, palette: np.ndarray,
                tolerance: float) -> np.ndarray:
    """Each centre moved onto a value representable at its exponent (float64).

    The nearest palette value or 0 representable at ``2^e`` (ties: the smaller) when it is
    within ``tolerance * |c|`` of ``c`` or no farther than the nearest multiple of ``2^e``;
    else that nearest multiple, codes clipped to [-127, 127] (rint: ties to even).
    """
    c = np.asarray(centres, np.float64)
    e = np.asarray(exponents, np.int64)
    nearest = np.ldexp(np.clip(np.rint(np.ldexp(c, -e)), -MAX_CODE, MAX_CODE), e)
    known = np.union1d(np.asarray(palette, np.float64), [0.0])
    best = nearest.copy()
    for exponent in np.unique(e):
        at = e == exponent
        allowed = known[representable(known, np.full(known.shape, exponent))]  # holds 0
        pos = np.searchsorted(allowed, c[at])
        below = allowed[np.clip(pos - 1, 0, allowed.size - 1)]
        above = allowed[np.clip(pos, 0, allowed.size - 1)]
        take_below = np.abs(c[at] - below) <= np.abs(above - c[at])
        best[at] = np.where(take_below, below, above)
    gap = np.abs(best - c)
    use_palette = gap <= np.maximum(np.abs(nearest - c), tolerance * np.abs(c))
    return np.where(use_palette, best, nearest)


def snap_stage(weights: np.ndarray, fixed: np.ndarray, values: np.ndarray,
               fixed_after: np.ndarray, blocks: Sequence[ChannelBlock],
               distance: float) -> Tuple[np.ndarray, int]:
    """The stage's result with every kernel channel's fixed values int8-exact.

    Args:
      weights: flat float32 weights before the stage (fixed entries hold their values).
      fixed: the mask of entries fixed before the stage (never changed here).
      values: the stage's flat values (`StageResult.values`).
      fixed_after: the stage's fixed mask (`StageResult.fixed`).
      blocks: the kernels' `ChannelBlock`s (flat positions outside them are unconstrained).
      distance: the stage's allowed distance ``a``, the tolerance of palette reuse.

    Returns:
      ``(values, snapped)``: float32 values (a copy; only entries newly fixed in this
      stage differ from `values`) and how many entries were moved.
    """
    out = np.array(values, dtype=np.float32, copy=True)
    palette = np.unique(out[fixed_after])
    snapped = 0
    for block in blocks:
        before, rows = block.rows(fixed), block.rows(out)
        exponents = channel_exponents(block.rows(weights).astype(np.float64), before,
                                      rows.astype(np.float64))
        expanded = np.broadcast_to(exponents[:, None], rows.shape)
        bad = block.rows(fixed_after) & ~before & ~representable(rows, expanded)
        if not bad.any():
            continue
        rows[bad] = snap_values(rows[bad], expanded[bad], palette, distance).astype(np.float32)
        block.put_rows(out, rows)
        snapped += int(np.count_nonzero(bad))
    return out, snapped


def exact_channels(values: np.ndarray, blocks: Sequence[ChannelBlock],
                   fixed: Optional[np.ndarray] = None) -> Tuple[int, int]:
    """``(exact, total)`` kernel channels: `fit_power_of_two` (the exporter's test) per channel.

    With `fixed`, only the fixed entries of each channel are tested (free ones are ignored).
    """
    exact = total = 0
    for block in blocks:
        rows = block.rows(values)
        masks = block.rows(fixed) if fixed is not None else np.ones(rows.shape, bool)
        for row, mask in zip(rows, masks):
            total += 1
            exact += bool(fit_power_of_two(row[mask]).exact)
    return exact, total


__all__ = ["ChannelBlock", "channel_exponents", "exact_channels", "holding_exponents",
           "representable", "snap_stage", "snap_values"]
