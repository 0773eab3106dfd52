"""Tests of tfmot_wfn.core.candidates (pure numpy; no TensorFlow import here)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmot_wfn.core.candidates import MAX_GRID_DISTANCE, candidate_centres, geometric_grid
from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE, min_exponent, signed_digits
from tfmot_wfn.testing.reference_fixing import additive_powers_of_two_scalar

max_abs_values = st.one_of(
    st.floats(1e-6, 10.0),
    st.sampled_from([0.0, ZERO_DISTANCE, 2 * ZERO_DISTANCE, 0.05, 0.5, 1.0, 4.0]),
)
distances = st.one_of(st.sampled_from([0.001, 0.0075, 0.015, 0.15, 0.5, 0.9999, 1.0, 3.0]), st.floats(0.001, 3.0))


# ----------------------------------------------------------------------------- geometric_grid


def test_geometric_grid_example():
    grid = geometric_grid(0.05, 1.0 / 3.0)  # ratio (4/3)/(2/3) = 2
    np.testing.assert_allclose(grid, [2.0**-7, 2.0**-6, 2.0**-5, 2.0**-4], rtol=1e-12)


def test_geometric_grid_below_zero_distance_is_g0_only():
    for m in [0.0, 1e-9, ZERO_DISTANCE]:
        np.testing.assert_array_equal(geometric_grid(m, 0.1), [ZERO_DISTANCE])


@pytest.mark.parametrize("bad", [0.0, -0.1])
def test_geometric_grid_rejects_non_positive_distance(bad):
    with pytest.raises(ValueError):
        geometric_grid(1.0, bad)
    with pytest.raises(ValueError):
        candidate_centres(1.0, bad, 0)


@settings(deadline=None, max_examples=150)
@given(max_abs=max_abs_values, distance=distances, data=st.data())
def test_geometric_grid_covers_range_within_relative_distance(max_abs, distance, data):
    grid = geometric_grid(max_abs, distance)
    d = min(distance, MAX_GRID_DISTANCE)
    assert grid[0] == ZERO_DISTANCE
    assert np.all(np.diff(grid) > 0)
    ratio = (1 + d) / (1 - d)
    np.testing.assert_allclose(grid[1:] / grid[:-1], ratio, rtol=1e-9)
    if max_abs <= ZERO_DISTANCE:
        assert grid.size == 1
        return
    # Exactly one point at or above max_abs, at the end (the rest are below).
    assert grid[-1] >= max_abs * (1 - 1e-12)
    if grid.size > 1:
        assert grid[-2] < max_abs
    # Every magnitude in [g0, max_abs] is within relative distance d of the grid.
    xs = [ZERO_DISTANCE, max_abs] + data.draw(st.lists(st.floats(ZERO_DISTANCE, max_abs), max_size=20))
    for x in xs:
        rel = np.min(np.abs(grid - x)) / x
        assert rel <= d * (1 + 1e-9) + 1e-12, (x, rel, d)
    # The worst point between two grid values, g_j / (1 - d), is at distance d.
    if grid.size > 1:
        x = grid[0] / (1 - d)
        assert math.isclose(np.min(np.abs(grid - x)) / x, d, rel_tol=1e-9)


# ----------------------------------------------------------------------------- candidate_centres


def test_candidate_centres_example_order_zero():
    c = candidate_centres(0.3, 0.15, 0)
    # Grid ratio 1.15/0.85: g0 * r**12 = 0.294 < 0.3 <= g0 * r**13 = 0.398, whose
    # power of two is 2^round(-1.33) = 2^-1. Order 0: 0 and the powers 2^-7 .. 2^-1.
    pos = np.array([2.0**e for e in range(-7, 0)], np.float32)
    np.testing.assert_array_equal(c, np.concatenate([-pos[::-1], [0.0], pos]).astype(np.float32))


def test_candidate_centres_tiny_range():
    expected = np.array([-ZERO_DISTANCE, 0, ZERO_DISTANCE], np.float32)
    np.testing.assert_array_equal(candidate_centres(0.0, 0.1, 0), expected)
    np.testing.assert_array_equal(candidate_centres(1e-5, 0.1, 4), expected)


@settings(deadline=None, max_examples=150)
@given(max_abs=max_abs_values, distance=distances, order=st.integers(0, 8))
def test_candidate_centres_structure(max_abs, distance, order):
    c = candidate_centres(max_abs, distance, order)
    assert c.dtype == np.float32
    assert c.ndim == 1
    assert np.all(np.diff(c) > 0)  # sorted and unique
    assert np.count_nonzero(c == 0) == 1
    np.testing.assert_array_equal(c, -c[::-1])  # symmetric
    assert not np.any(np.signbit(c[c == 0]))  # the zero is +0.0
    assert np.all(np.isfinite(c))
    pos = c[c > 0]
    assert pos.size >= 1
    floor = min_exponent(order)
    for v in pos.tolist():
        digits = signed_digits(v)
        assert 1 <= len(digits) <= order + 1, (v, digits)
        assert min(e for _, e in digits) >= floor
    # Smallest positive candidate is at least ~g0 / sqrt(2) (g0 maps to itself).
    assert pos[0] == np.float32(ZERO_DISTANCE)
    # The largest is the approximation of the last grid point (>= max_abs).
    grid = geometric_grid(max_abs, distance)
    expected = {np.float32(additive_powers_of_two_scalar(g, distance, order)) for g in grid.tolist()}
    expected = sorted(v for v in expected if v > 0)
    np.testing.assert_array_equal(pos, np.array(expected, np.float32))


@settings(deadline=None, max_examples=60)
@given(max_abs=st.floats(ZERO_DISTANCE, 10.0), order=st.integers(0, 3))
def test_order_zero_candidates_are_pure_powers_of_two(max_abs, order):
    c0 = candidate_centres(max_abs, 0.05, 0)
    for v in c0[c0 != 0].tolist():
        assert len(signed_digits(v)) == 1
    # Higher orders keep (at least) the covering power of two for the top of the range.
    assert candidate_centres(max_abs, 0.05, order).max() >= max_abs / math.sqrt(2) * (1 - 1e-6)


@settings(deadline=None, max_examples=60)
@given(zero_distance=st.floats(1e-4, 0.2), order=st.integers(0, 3),
       distance=st.sampled_from([0.0075, 0.015, 0.05]))
def test_candidates_are_sums_of_powers_of_two_for_any_zero_distance(zero_distance, order, distance):
    """A zero_distance that is not a power of two (0.01, say) still gives candidates that are
    0 or sums of at most order + 1 signed powers of two, none below 2**min_exponent."""
    c = candidate_centres(1.0, distance, order, zero_distance=zero_distance)
    floor = min_exponent(order, zero_distance)
    assert floor == math.floor(floor)
    for v in c[c > 0].tolist():
        digits = signed_digits(v)
        assert 1 <= len(digits) <= order + 1, (v, digits)
        assert min(e for _, e in digits) >= floor, (v, digits)
