"""Tests of tfmot_wfn.core.powers_of_two (pure numpy; no TensorFlow import here)."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmot_wfn.core.powers_of_two import (
    ZERO_DISTANCE,
    additive_powers_of_two,
    format_signed_digits,
    min_exponent,
    round_to_power_of_two,
    signed_digits,
)
from tfmot_wfn.testing.reference_fixing import (
    additive_powers_of_two_scalar,
    power_of_two_scalar,
)

finite = st.floats(allow_nan=False, allow_infinity=False)
magnitudes = st.one_of(
    st.floats(-100.0, 100.0, allow_nan=False),
    st.floats(-0.05, 0.05, allow_nan=False),  # around g0 = 2**-7
    st.floats(-1e-6, 1e-6, allow_nan=False),
    st.floats(-100.0, 100.0, width=32, allow_nan=False),
)
distances = st.one_of(st.sampled_from([0.001, 0.0075, 0.015, 0.15, 1.0, 3.0]), st.floats(0.001, 3.0))
zero_distances = st.sampled_from([ZERO_DISTANCE, 2.0**-5, 2.0**-10, 0.01])


def digits_value(digits):
    return sum(Fraction(s) * Fraction(2) ** e for s, e in digits)


# ----------------------------------------------------------------------------- constants


def test_zero_distance_is_two_to_minus_seven():
    assert ZERO_DISTANCE == 2.0**-7 == 0.0078125


@pytest.mark.parametrize("order,expected", [(0, -8.0), (1, -9.0), (5, -13.0), (20, -28.0)])
def test_min_exponent(order, expected):
    assert min_exponent(order) == expected
    assert min_exponent(order, 2.0**-5) == expected + 2
    # A g0 that is not a power of two takes the power of two below it (0.01 -> 2**-7).
    assert min_exponent(order, 0.01) == expected


# ----------------------------------------------------------------------------- round_to_power_of_two


def test_round_to_power_of_two_examples():
    v = np.array([0.0, 1.0, 3.0, -3.0, 0.75, 0.7, 5.0, 6.0, 1e-6, -1e-6, 2.0**-20])
    out = round_to_power_of_two(v, -8)
    # log2: 0, 1.58, 1.58, -0.415, -0.51, 2.32, 2.58, floor -8
    np.testing.assert_array_equal(out, [0.0, 1.0, 4.0, -4.0, 1.0, 0.5, 4.0, 8.0, 2.0**-8, -(2.0**-8), 2.0**-8])
    assert out.dtype == np.float64


@settings(deadline=None, max_examples=200)
@given(v=magnitudes, floor=st.integers(-40, 5))
def test_round_to_power_of_two_matches_scalar(v, floor):
    out = round_to_power_of_two(np.array([v]), floor)[0]
    assert out == power_of_two_scalar(v, floor)
    if v != 0:
        assert math.copysign(1.0, out) == math.copysign(1.0, v)
        m, _ = math.frexp(abs(out))
        assert m == 0.5  # an exact power of two
        assert abs(out) >= 2.0**floor


# ----------------------------------------------------------------------------- additive_powers_of_two


def test_additive_powers_of_two_examples():
    # 0.75: order 0 -> 2^0; order 1 adds the residual -0.25 -> exactly 0.75.
    assert additive_powers_of_two(np.array([0.75]), 0.01, 0)[0] == 1.0
    assert additive_powers_of_two(np.array([0.75]), 0.01, 1)[0] == 0.75
    # Below g0 -> 0 at any order; exactly g0 is kept.
    np.testing.assert_array_equal(additive_powers_of_two(np.array([0.0077, -0.0077, 0.0]), 0.01, 3), [0.0, 0.0, 0.0])
    assert additive_powers_of_two(np.array([ZERO_DISTANCE]), 0.01, 0)[0] == ZERO_DISTANCE
    # Residual below distance*|v| stops refinement: 0.3 at order 3 with distance 0.2.
    # order 0: 0.25 (residual 0.05 < 0.06) -> stays 0.25.
    assert additive_powers_of_two(np.array([0.3]), 0.2, 3)[0] == 0.25
    # With a tiny distance: 0.25 + 2^-4 (0.0625) = 0.3125, residual -0.0125 -> -2^-6 ...
    out = additive_powers_of_two(np.array([0.3]), 1e-3, 2)[0]
    assert out == 0.25 + 0.0625 - 2.0**-6
    # Signs are mirrored.
    v = np.array([0.3, 1.7, 12.0, 0.011])
    np.testing.assert_array_equal(additive_powers_of_two(-v, 0.01, 3), -additive_powers_of_two(v, 0.01, 3))


@settings(deadline=None, max_examples=300)
@given(
    values=st.lists(magnitudes, min_size=1, max_size=20),
    distance=distances,
    order=st.integers(0, 8),
    g0=zero_distances,
)
def test_additive_powers_of_two_matches_scalar_reference(values, distance, order, g0):
    out = additive_powers_of_two(np.array(values, dtype=np.float64), distance, order, g0)
    expected = [additive_powers_of_two_scalar(v, distance, order, g0) for v in values]
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, np.array(expected))


@settings(deadline=None, max_examples=200)
@given(values=st.lists(magnitudes, min_size=1, max_size=20), distance=distances, order=st.integers(0, 8))
def test_additive_powers_of_two_has_at_most_order_plus_one_terms(values, distance, order):
    out = additive_powers_of_two(np.array(values), distance, order)
    floor = min_exponent(order)
    for v, a in zip(values, out):
        if abs(v) < ZERO_DISTANCE:
            assert a == 0.0
            continue
        assert a != 0.0
        digits = signed_digits(a)
        assert 1 <= len(digits) <= order + 1
        assert min(e for _, e in digits) >= floor
        # The first term carries the sign: the approximation never flips sign.
        assert (a > 0) == (v > 0)


@settings(deadline=None, max_examples=100)
@given(v=st.floats(ZERO_DISTANCE, 50.0))
def test_order_zero_is_nearest_power_of_two_in_log_scale(v):
    """Order 0 rounds log2|v|: the relative error is at most sqrt(2) - 1."""
    a = additive_powers_of_two(np.array([v]), 1e-12, 0)[0]
    assert abs(a - v) / v <= math.sqrt(2) - 1 + 1e-12
    assert abs(math.log2(a) - math.log2(v)) <= 0.5 + 1e-12


def test_sqrt2_boundary_matches_scalar():
    """Values next to 2**(k+0.5) are where log2 rounding is most fragile."""
    vals = []
    for k in range(-12, 8):
        x = math.sqrt(2.0) * 2.0**k
        for step in range(-4, 5):
            y = x
            for _ in range(abs(step)):
                y = math.nextafter(y, math.inf if step > 0 else -math.inf)
            vals.append(y)
    out = additive_powers_of_two(np.array(vals), 0.001, 3)
    np.testing.assert_array_equal(out, [additive_powers_of_two_scalar(v, 0.001, 3) for v in vals])


# ----------------------------------------------------------------------------- signed_digits


@pytest.mark.parametrize(
    "value,digits",
    [
        (0.0, []),
        (-0.0, []),
        (1.0, [(1, 0)]),
        (0.75, [(1, 0), (-1, -2)]),
        (-0.75, [(-1, 0), (1, -2)]),
        (3.0, [(1, 2), (-1, 0)]),
        (5.0, [(1, 2), (1, 0)]),
        (7.0, [(1, 3), (-1, 0)]),
        (0.0078125, [(1, -7)]),
        (0.3125, [(1, -2), (1, -4)]),
        (-(2.0**-30), [(-1, -30)]),
    ],
)
def test_signed_digits_examples(value, digits):
    assert signed_digits(value) == digits


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_signed_digits_rejects_non_finite(bad):
    with pytest.raises(ValueError):
        signed_digits(bad)


@settings(deadline=None, max_examples=400)
@given(value=st.one_of(finite, st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_signed_digits_reconstruct_exactly_and_are_naf(value):
    digits = signed_digits(value)
    assert digits_value(digits) == Fraction(value)
    exps = [e for _, e in digits]
    assert exps == sorted(exps, reverse=True)
    # Non-adjacent form: no two non-zero digits in neighbouring positions.
    assert all(a - b >= 2 for a, b in zip(exps, exps[1:]))
    assert all(s in (1, -1) for s, _ in digits)
    if value:
        assert digits[0][0] == (1 if value > 0 else -1)  # the leading digit carries the sign
    assert signed_digits(-value) == [(-s, e) for s, e in digits]


def _minimal_weights(limit_exp=11, max_terms=6):
    """Brute force: fewest signed powers of two (exponents 0..limit_exp) summing to each integer."""
    terms = [s * 2**e for e in range(limit_exp + 1) for s in (1, -1)]
    best = {0: 0}
    layer = {0}
    for k in range(1, max_terms + 1):
        nxt = set()
        for x in layer:
            for t in terms:
                y = x + t
                if y not in best:
                    best[y] = k
                    nxt.add(y)
        layer = nxt
    return best


_BEST = _minimal_weights()


def test_signed_digits_minimal_against_brute_force():
    for n in range(1, 1025):
        # Every n <= 1024 has a signed-binary form with <= 6 terms (NAF weight <= ceil(11/2)).
        assert len(signed_digits(float(n))) == _BEST[n], n


@settings(deadline=None, max_examples=200)
@given(n=st.integers(1, 1024), shift=st.integers(-40, 10), negative=st.booleans())
def test_signed_digits_minimal_for_dyadic_values(n, shift, negative):
    value = math.ldexp(float(n), shift) * (-1 if negative else 1)
    digits = signed_digits(value)
    assert len(digits) == _BEST[n]
    # Shifting by a power of two shifts the exponents only.
    base = signed_digits(float(n))
    sign = -1 if negative else 1
    assert digits == [(sign * s, e + shift) for s, e in base]


# ----------------------------------------------------------------------------- format_signed_digits


@pytest.mark.parametrize(
    "value,text",
    [
        (0.0, "0"),
        (1.0, "2^0"),
        (0.75, "2^0 - 2^-2"),
        (-0.75, "-2^0 + 2^-2"),
        (3.0, "2^2 - 2^0"),
        (5.0, "2^2 + 2^0"),
        (0.0078125, "2^-7"),
        (-0.3125, "-2^-2 - 2^-4"),
        (0.5 + 2.0**-3 + 2.0**-9, "2^-1 + 2^-3 + 2^-9"),
    ],
)
def test_format_signed_digits_examples(value, text):
    assert format_signed_digits(value) == text
