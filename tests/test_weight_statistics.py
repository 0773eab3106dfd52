"""Tests of tfmot_wfn.core.weight_statistics (pure numpy; no TensorFlow import here)."""

import math
import os
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))

from tfmot_wfn.core.weight_statistics import (  # noqa: E402
    concatenate, entropy_bits, summarize, value_counts)


def test_entropy_hand_computed():
    assert entropy_bits(np.array([1.0, 1.0, 2.0, 2.0])) == 1.0
    assert entropy_bits(np.array([0.5, 0.25, -0.25, 1.0])) == 2.0
    # p = (3/4, 1/4): -(0.75 log2 0.75 + 0.25 log2 0.25) = 0.8112781244591328
    assert math.isclose(entropy_bits(np.array([0.0, 0.0, 0.0, 1.0])), 0.8112781244591328, rel_tol=1e-12)
    # p = (1/2, 1/4, 1/8, 1/8): 1.75 bits
    w = np.array([3.0] * 4 + [1.0] * 2 + [-1.0, 0.5], np.float32)
    assert math.isclose(entropy_bits(w), 1.75, rel_tol=1e-12)
    # A single value carries no information.
    assert entropy_bits(np.full(7, 0.125)) == 0.0


def test_negative_zero_counts_as_zero():
    w = np.array([-0.0, 0.0, 1.0, -0.0], np.float32)
    values, counts = value_counts(w)
    np.testing.assert_array_equal(values, [0.0, 1.0])
    np.testing.assert_array_equal(counts, [3, 1])
    assert not np.signbit(values[0])
    assert entropy_bits(np.array([-0.0, 0.0])) == 0.0
    assert math.isclose(entropy_bits(w), 0.8112781244591328, rel_tol=1e-12)


def test_include_zero_false_drops_zeros():
    w = np.array([0.0, -0.0, 0.0, 1.0, 2.0], np.float64)
    values, counts = value_counts(w, include_zero=False)
    np.testing.assert_array_equal(values, [1.0, 2.0])
    np.testing.assert_array_equal(counts, [1, 1])
    assert entropy_bits(w, include_zero=False) == 1.0
    # p = (3/5, 1/5, 1/5) with the zeros kept
    expected = -(0.6 * math.log2(0.6) + 2 * 0.2 * math.log2(0.2))
    assert math.isclose(entropy_bits(w), expected, rel_tol=1e-12)


def test_empty_and_all_zero():
    assert entropy_bits(np.zeros(0, np.float32)) == 0.0
    assert entropy_bits(np.zeros(5, np.float32), include_zero=False) == 0.0
    values, counts = value_counts(np.zeros(5), include_zero=False)
    assert values.size == 0 and counts.size == 0


def test_inputs_are_not_modified_and_shapes_flattened():
    w = np.array([[-0.0, 1.0], [1.0, 2.0]], np.float32)
    before = w.copy()
    values, counts = value_counts(w)
    np.testing.assert_array_equal(values, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(counts, [1, 2, 1])
    assert np.array_equal(w.view(np.uint32), before.view(np.uint32))  # -0.0 kept in the input


def test_concatenate():
    out = concatenate([np.ones((2, 3)), np.zeros(4, np.float64), np.array([[0.5]])])
    assert out.dtype == np.float32 and out.shape == (11,)
    p = np.array([6, 4, 1]) / 11
    assert entropy_bits(out) == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert concatenate([]).size == 0


@settings(deadline=None, max_examples=100)
@given(
    values=st.lists(st.sampled_from([0.0, -0.0, 0.5, -0.5, 0.25, 1.0, 2.0**-7, 3.0]), max_size=60),
    include_zero=st.booleans(),
)
def test_entropy_matches_counter(values, include_zero):
    w = np.array(values, np.float32)
    counter = Counter(v + 0.0 for v in values if include_zero or v != 0)  # Python: -0.0 == 0.0
    total = sum(counter.values())
    expected = -sum(c / total * math.log2(c / total) for c in counter.values()) if total else 0.0
    h = entropy_bits(w, include_zero)
    assert math.isclose(h, expected, rel_tol=1e-12, abs_tol=1e-12)
    assert 0.0 <= h <= math.log2(max(len(counter), 1)) + 1e-12
    vals, counts = value_counts(w, include_zero)
    assert vals.size == len(counter)
    assert int(counts.sum()) == total


def _entropy_of(counter: Counter) -> float:
    total = sum(counter.values())
    return -sum(c / total * math.log2(c / total) for c in counter.values()) if total else 0.0


@settings(deadline=None, max_examples=150)
@given(
    pairs=st.lists(st.tuples(
        st.sampled_from([0.0, -0.0, 0.5, -0.5, 0.25, 1.0, 2.0**-7, 3.0, 0.3, -1.7]), st.booleans()),
        max_size=80),
    all_fixed=st.booleans(),
)
def test_summarize_matches_counters(pairs, all_fixed):
    """`summarize` (fixed and free values sorted apart, counts merged) against Counters."""
    values = np.array([v for v, _ in pairs], np.float32)
    fixed = np.array([f or all_fixed for _, f in pairs], bool)
    s = summarize(values, fixed)
    everything = Counter(float(v) + 0.0 for v in values)
    nonzero = Counter({v: c for v, c in everything.items() if v != 0})
    held = Counter(float(v) + 0.0 for v, f in zip(values, fixed) if f)
    assert s.total_weights == len(pairs)
    assert s.fixed_fraction == (fixed.mean() if len(pairs) else 0.0)
    assert s.unique_values == len(everything)
    assert s.unique_values_nonzero == len(nonzero)
    assert math.isclose(s.entropy_bits, _entropy_of(everything), rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(s.entropy_bits_nonzero, _entropy_of(nonzero), rel_tol=1e-12, abs_tol=1e-12)
    assert s.zero_fraction == (everything[0.0] / len(pairs) if len(pairs) else 0.0)
    assert s.palette.tolist() == sorted(held)
    assert s.palette_counts.tolist() == [held[v] for v in sorted(held)]
    assert not np.signbit(s.palette[s.palette == 0]).any()  # -0.0 is counted as 0.0


def test_summarize_counts_nan_as_one_value_like_np_unique():
    values = np.array([np.nan, np.nan, 1.0, np.nan], np.float32)
    s = summarize(values, np.array([True, False, False, True]))
    unique, counts = np.unique(values, return_counts=True)  # NaNs grouped (equal_nan)
    assert s.unique_values == unique.size == 2
    assert math.isclose(s.entropy_bits, entropy_bits(values), rel_tol=1e-12)
    assert s.palette_counts.tolist() == [2]  # the two fixed NaNs
