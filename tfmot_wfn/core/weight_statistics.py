"""Weight-space statistics: unique values and Shannon entropy (pure numpy)."""

from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np


def value_counts(values: np.ndarray, include_zero: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and their counts (0 and -0 are the same value)."""
    v = np.asarray(values).ravel()
    v = v + np.zeros((), v.dtype)  # -0.0 -> 0.0
    if not include_zero:
        v = v[v != 0]
    return np.unique(v, return_counts=True)


def entropy_bits(values: np.ndarray, include_zero: bool = True) -> float:
    """Shannon entropy ``-sum p log2 p`` of the empirical distribution of values."""
    _, counts = value_counts(values, include_zero)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def concatenate(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """Flatten and join arrays (float32), for network-wide statistics."""
    parts = [np.asarray(a, dtype=np.float32).ravel() for a in arrays]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)
