"""How many signed power-of-two terms each weight needs (pure numpy).

A fixed weight ``±2^a ± 2^b`` multiplies an activation with two shifts and one
add; the term count of a value is the length of its minimal signed-digit form
(`powers_of_two.signed_digits`, the decomposition `tfmot_wfn.report` prints),
computed here for a whole tensor at once.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np


#: A value with more terms than this is "not a sum of a few powers of two": an
#: arbitrary float32 needs about 8 on average (24-bit mantissa), WFN palette values 1-3.
DEFAULT_MAX_TERMS = 6


def term_counts(values: np.ndarray) -> np.ndarray:
    """Signed power-of-two terms of every value (0 for zeros), same shape as `values`.

    The number of non-zero digits of the non-adjacent form of each value's 53-bit
    mantissa, vectorised (equal to ``len(signed_digits(v))``): with x the mantissa as
    an integer, h = x >> 1 and c = h ^ (x + h), the digits +1 sit at the set bits of
    (x + h) & c and the digits -1 at those of h & c.
    """
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("a weight is NaN or infinite; the hardware cost needs finite weights")
    mantissa, _ = np.frexp(np.abs(v))  # in [0.5, 1): exactly 53 significant bits
    x = (mantissa * 2.0**53).astype(np.uint64)
    half = x >> np.uint64(1)
    changes = half ^ (x + half)
    return _popcount((x + half) & changes) + _popcount(half & changes)


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.int64)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 has bitwise_count; older numpy: a byte table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _BYTE_BITS[x.view(np.uint8)].reshape(x.shape + (8,)).sum(axis=-1)


def terms_histogram(terms: np.ndarray) -> Dict[int, int]:
    """``{term count: number of non-zero weights}``."""
    t = np.asarray(terms).ravel()
    counts = np.bincount(t[t > 0]) if np.any(t > 0) else np.zeros(0, np.int64)
    return {int(k): int(c) for k, c in enumerate(counts) if k > 0 and c > 0}


def too_many_terms(values: np.ndarray, terms: np.ndarray, max_terms: int) -> Tuple[int, float]:
    """Number of non-zero weights with more than `max_terms` terms, and one such value (or nan)."""
    bad = np.asarray(terms) > max_terms
    n = int(np.count_nonzero(bad))
    return n, (float(np.asarray(values)[bad].ravel()[0]) if n else float("nan"))
