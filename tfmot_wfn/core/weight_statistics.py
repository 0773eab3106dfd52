"""Weight-space statistics: unique values, Shannon entropy, network summary (pure numpy)."""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Tuple

import numpy as np


def value_counts(values: np.ndarray, include_zero: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and their counts (0 and -0 are the same value)."""
    v = np.asarray(values).ravel()
    v = v + np.zeros((), v.dtype)  # -0.0 -> 0.0
    if not include_zero:
        v = v[v != 0]
    return np.unique(v, return_counts=True)


def entropy_of_counts(counts: np.ndarray) -> float:
    """Shannon entropy ``-sum p log2 p`` (bits) of the distribution given by `counts`."""
    counts = np.asarray(counts)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def entropy_bits(values: np.ndarray, include_zero: bool = True) -> float:
    """Shannon entropy ``-sum p log2 p`` of the empirical distribution of values."""
    return entropy_of_counts(value_counts(values, include_zero)[1])


def concatenate(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """Flatten and join arrays (float32), for network-wide statistics."""
    parts = [np.asarray(a, dtype=np.float32).ravel() for a in arrays]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclasses.dataclass(frozen=True)
class WeightSummary:
    """Network-wide numbers of a set of weights and their fixed mask (see `summarize`)."""

    total_weights: int
    fixed_fraction: float
    unique_values: int
    unique_values_nonzero: int
    entropy_bits: float
    entropy_bits_nonzero: float
    zero_fraction: float
    #: Sorted distinct values of the fixed weights, and how many weights hold each.
    palette: np.ndarray
    palette_counts: np.ndarray

    @property
    def palette_size(self) -> int:
        return int(self.palette.size)

    def scalars(self) -> Dict[str, float]:
        """Every number above except the palette arrays, plus ``palette_size``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if not f.name.startswith("palette")}
        out["palette_size"] = self.palette_size
        return out


def _merge_counts(a: Tuple[np.ndarray, np.ndarray],
                  b: Tuple[np.ndarray, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Two `value_counts` results as one: a stable sort of two sorted runs is a linear merge
    (timsort), after which equal values are neighbours and their counts are summed."""
    joined = np.concatenate([a[0], b[0]])
    order = np.argsort(joined, kind="stable")
    joined = joined[order]
    counts = np.concatenate([a[1], b[1]]).astype(np.int64)[order]
    if joined.size == 0:
        return joined, counts
    differs = (joined[1:] != joined[:-1]) & ~(np.isnan(joined[1:]) & np.isnan(joined[:-1]))
    starts = np.flatnonzero(np.concatenate([[True], differs]))  # NaNs count as one value
    return joined[starts], np.add.reduceat(counts, starts)


def summarize(values: np.ndarray, fixed: np.ndarray) -> WeightSummary:
    """The `WeightSummary` of `values` (any shape, read as float32) and their `fixed` mask.

    Unique values and entropies count 0 and -0 as one value; "nonzero" leaves 0
    out. The fixed and the free values are sorted apart (the palette is the fixed part's
    distinct values) and their counts merged, so each value is sorted once.
    """
    values = np.asarray(values, np.float32).ravel()
    fixed = np.asarray(fixed, bool).ravel()
    if fixed.size != values.size:
        raise ValueError(f"fixed mask has {fixed.size} entries, values have {values.size}")
    palette, palette_counts = value_counts(values[fixed])
    if palette_counts.sum() == values.size:  # all fixed (a stripped network): one sort
        unique, counts = palette, palette_counts
    else:  # the free values' counts merged into the palette's: one sort of each part
        unique, counts = _merge_counts((palette, palette_counts), value_counts(values[~fixed]))
    nonzero = unique != 0
    size = int(values.size)
    return WeightSummary(
        total_weights=size,
        fixed_fraction=float(fixed.mean()) if size else 0.0,
        unique_values=int(unique.size),
        unique_values_nonzero=int(np.count_nonzero(nonzero)),
        entropy_bits=entropy_of_counts(counts),
        entropy_bits_nonzero=entropy_of_counts(counts[nonzero]),
        zero_fraction=float(counts[~nonzero].sum()) / size if size else 0.0,
        palette=palette,
        palette_counts=palette_counts,
    )
