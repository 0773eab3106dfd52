"""Powers-of-two approximations and signed power-of-two decompositions.

Pure numpy, no TensorFlow. Weight Fixing Networks restrict every fixed weight to
0 or a sum of a few signed powers of two; this module builds such values
(`additive_powers_of_two`) and reads them back (`signed_digits`).
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

#: Weights with magnitude below this are "zero distance" from the centre 0
#: (the paper's g0 = 2**-7). It also starts the geometric candidate grid.
ZERO_DISTANCE = 2.0**-7


def min_exponent(order: int, zero_distance: float = ZERO_DISTANCE) -> float:
    """Smallest power-of-two exponent allowed at `order`: floor(log2(g0)) - order - 1.

    For the paper's g0 = 2**-7 this is log2(g0) - order - 1. The floor keeps every term a
    power of two (an integer exponent) when a user's ``zero_distance`` is not one: with
    log2(0.01) - 2, the smallest "term" would be 0.0025 and a candidate such as
    -(2**-4 + 0.0025) would not be a sum of signed powers of two.
    """
    return float(math.floor(math.log2(zero_distance)) - order - 1)


def round_to_power_of_two(values: np.ndarray, floor_exponent: float) -> np.ndarray:
    """`sign(v) * 2**max(floor_exponent, round(log2|v|))` element-wise; 0 stays 0.

    Rounding is numpy's half-to-even on the exponent, as in the reference code.
    Computed in float64.
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros_like(v)
    nz = v != 0
    if np.any(nz):
        mag = np.abs(v[nz])
        exponent = np.maximum(floor_exponent, np.round(np.log2(mag)))
        out[nz] = np.sign(v[nz]) * np.exp2(exponent)
    return out


def additive_powers_of_two(
    values: np.ndarray,
    distance: float,
    order: int,
    zero_distance: float = ZERO_DISTANCE,
) -> np.ndarray:
    """Approximate `values` by sums of at most `order + 1` signed powers of two.

    The first term is the power of two nearest in log scale (values below
    `zero_distance` become 0). Then, up to `order` times, the residual's own
    power-of-two approximation is added wherever the residual is still at least
    `distance * |v|` and the current approximation is not 0.
    """
    v = np.asarray(values, dtype=np.float64)
    floor = min_exponent(order, zero_distance)
    current = round_to_power_of_two(np.where(np.abs(v) < zero_distance, 0.0, v), floor)
    threshold = np.abs(distance * v)
    for _ in range(order):
        residual = v - current
        step = round_to_power_of_two(residual, floor)
        change = (np.abs(residual) >= threshold) & (current != 0)
        current = current + np.where(change, step, 0.0)
    return current


def signed_digits(value: float) -> List[Tuple[int, int]]:
    """Minimal decomposition of `value` into signed powers of two.

    Returns `[(sign, exponent), ...]` with the largest exponent first, using the
    non-adjacent form (NAF) of the value's binary mantissa, which has the fewest
    non-zero signed digits of any signed-binary representation.

    >>> signed_digits(0.75)
    [(1, 0), (-1, -2)]
    >>> signed_digits(0.0)
    []
    """
    value = float(value)
    if value == 0.0:
        return []
    if not math.isfinite(value):
        raise ValueError(f"signed_digits needs a finite value, got {value!r}")
    sign = 1 if value > 0 else -1
    mantissa, exponent = math.frexp(abs(value))  # abs(value) = mantissa * 2**exponent
    # Scale the mantissa to an integer: doubles carry at most 53 significant bits.
    m = int(mantissa * (1 << 53))
    shift = exponent - 53
    digits: List[Tuple[int, int]] = []
    position = 0
    while m != 0:
        if m & 1:
            d = 2 - (m & 3)  # +1 if m % 4 == 1, -1 if m % 4 == 3
            m -= d
            digits.append((sign * d, position + shift))
        m >>= 1
        position += 1
    digits.reverse()
    return digits


def format_signed_digits(value: float) -> str:
    """Human-readable sum of signed powers of two, e.g. ``'2^0 - 2^-2'``."""
    digits = signed_digits(value)
    if not digits:
        return "0"
    parts = []
    for i, (s, e) in enumerate(digits):
        term = f"2^{e}"
        if i == 0:
            parts.append(term if s > 0 else f"-{term}")
        else:
            parts.append(("+ " if s > 0 else "- ") + term)
    return " ".join(parts)
