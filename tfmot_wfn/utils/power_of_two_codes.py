"""Values as integer codes times one power of two: the int8 exactness test (pure numpy).

WFN values are 0 or sums of a few signed powers of two. A set of values whose non-zero
members are all multiples of ``2^e`` (``e`` the finest power of two they use) with
``max|v| / 2^e <= 127`` is EXACTLY ``int8 code * 2^e``. This is the one implementation
of that test: the int8 exporter (`tfmot_wfn.tflite.int8_exact`, which re-exports these
names) checks exported channels with it, and the ``int8_exact`` fixing constraint
(`tfmot_wfn.core.int8_channels`) keeps every kernel channel inside it. It lives in
``utils`` because both ``core`` and ``tflite`` use it and neither may import the other.

```python
fit = fit_power_of_two(np.array([0.5, -0.25, 0.125]))
fit.exact, fit.exponent, fit.codes          # True, -3, [4, -2, 1]
```
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

MAX_CODE = 127            # symmetric int8 weights: codes in [-127, 127], zero point 0


@dataclasses.dataclass(frozen=True)
class PowerOfTwoFit:
    """Codes of a set of float values at one power-of-two scale ``2^exponent``.

    ``exact``: ``codes * 2^exponent == values`` bit for bit, every code in
    [-127, 127]. ``exponent`` is None for all-zero values (any scale is exact).
    When not exact, ``codes`` is empty and ``reason`` says why.
    """

    exact: bool
    exponent: Optional[int]
    codes: np.ndarray
    reason: str = ""


def value_exponents(values: np.ndarray) -> np.ndarray:
    """Per value, the exponent of the finest power of two it uses (int64, same shape).

    ``v`` is an odd multiple of ``2^value_exponents(v)``: ``value_exponents([0.75, 2]) ==
    [-2, 1]``. Zeros get the largest int64 (they are a multiple of every power of two).
    Raises ValueError for non-finite values.
    """
    v = np.asarray(values, np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("non-finite values have no power-of-two exponent")
    mantissa, exponent = np.frexp(np.abs(v))           # |v| = m * 2^x, m in [0.5, 1)
    integer = np.ldexp(mantissa, 53).astype(np.int64)  # exact: 53-bit mantissa
    lowest = integer & -integer                         # lowest set bit
    nonzero = lowest > 0
    trailing = np.log2(np.where(nonzero, lowest, 1).astype(np.float64)).astype(np.int64)
    return np.where(nonzero, exponent.astype(np.int64) - 53 + trailing,
                    np.iinfo(np.int64).max)


def finest_exponent(values: np.ndarray) -> Optional[int]:
    """The exponent of the finest power of two the non-zero ``values`` use, None if all zero.

    Every value is then an integer multiple of ``2^e``: ``finest_exponent([0.75, 2]) == -2``.
    Raises ValueError for non-finite values.
    """
    v = np.asarray(values, np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError("non-finite values have no power-of-two exponent")
    v = v[v != 0]
    if v.size == 0:
        return None
    return int(np.min(value_exponents(v)))


def fit_power_of_two(values: np.ndarray, max_code: int = MAX_CODE) -> PowerOfTwoFit:
    """``values`` as exact int8 codes at the coarsest power-of-two scale that holds them.

    The scale is ``2^e`` with ``e`` = `finest_exponent` (a coarser one would make the
    finest value a fraction); the values fit when ``max|v| / 2^e <= max_code``.

    ```python
    fit_power_of_two(np.array([0.75, -0.5]))     # exact, exponent -2, codes [3, -2]
    fit_power_of_two(np.array([1.0, 2 ** -8]))   # not exact: codes up to 256
    ```
    """
    v = np.asarray(values, np.float64)
    if not np.all(np.isfinite(v)):
        return PowerOfTwoFit(False, None, np.zeros(0, np.int8), "non-finite values")
    e = finest_exponent(v)
    if e is None:
        return PowerOfTwoFit(True, None, np.zeros(v.shape, np.int8))
    codes = np.ldexp(v, -e)  # exact: a power-of-two division
    largest = float(np.max(np.abs(codes)))
    if largest > max_code:
        bits = int(np.ceil(np.log2(largest + 1))) + 1
        return PowerOfTwoFit(False, e, np.zeros(0, np.int8), (
            f"values need codes up to {largest:.0f} at their finest power of two 2^{e} "
            f"(max |v| = {float(np.max(np.abs(v))):.6g}): {bits} signed bits, more than int8's "
            f"{max_code}"))
    return PowerOfTwoFit(True, e, codes.astype(np.int8))


def holding_exponents(largest: np.ndarray, max_code: int = MAX_CODE) -> np.ndarray:
    """Per entry, the smallest ``e`` with ``largest <= max_code * 2^e`` (0 where largest is 0)."""
    m = np.asarray(largest, np.float64)
    positive = m > 0
    safe = np.where(positive, m, 1.0)
    e = np.ceil(np.log2(safe) - np.log2(max_code)).astype(np.int64)
    # log2 rounds: settle the boundary exactly (ldexp is exact).
    e = np.where(np.ldexp(float(max_code), e) < safe, e + 1, e)
    e = np.where(np.ldexp(float(max_code), e - 1) >= safe, e - 1, e)
    return np.where(positive, e, 0)


def widest_codes(fit: PowerOfTwoFit, max_code: int = MAX_CODE) -> PowerOfTwoFit:
    """An exact `fit` moved to the finest power-of-two scale at which its codes still fit.

    Codes ``k`` at ``2^e`` are also exact as ``k * 2^s`` at ``2^(e - s)``; the largest
    shift ``s`` with ``max|k| * 2^s <= max_code`` spreads the codes over the int8 range,
    as a max-abs scale would, while every value stays exact. An int8 kernel's scale also
    sets its int32 bias's step (``input_scale * weight_scale``): at the coarsest exact
    scale (a channel of values +-2^e has codes +-1) the bias rounds up to 127x coarser
    than at a max-abs scale; at the widest codes it rounds no coarser than a max-abs scale's
    (within 2x). Inexact or all-zero fits come back unchanged.

    ```python
    widest_codes(fit_power_of_two(np.array([0.5, -0.25])))   # exponent -8, codes [64, -32]
    ```
    """
    if not fit.exact or fit.exponent is None or fit.codes.size == 0:
        return fit
    codes = fit.codes.astype(np.int64)
    largest = int(np.max(np.abs(codes)))
    if largest == 0:
        return fit
    # The finest step that holds the largest code (`holding_exponents`), in steps of 2^exponent.
    shift = -int(holding_exponents(np.array([largest]), max_code)[0])
    codes = (codes << shift).astype(np.int8)
    return PowerOfTwoFit(True, fit.exponent - shift, codes, fit.reason)


__all__ = ["MAX_CODE", "PowerOfTwoFit", "finest_exponent", "fit_power_of_two",
           "holding_exponents", "value_exponents", "widest_codes"]
