"""Tests of tfmot_wfn.core.value_sort: the keyed sort equals a lexsort by (value, index)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfmot_wfn.core.value_sort import sort_by_value


def reference(values, index):
    """The obvious order: by value, -0.0 before 0.0, then by index."""
    order = np.lexsort((index, ~np.signbit(values), values))
    return values[order], index[order]


def check(values, index):
    got_values, got_index = sort_by_value(values, index)
    want_values, want_index = reference(values, index)
    assert got_values.dtype == np.float32 and got_index.dtype == index.dtype
    # Bit for bit (so -0.0 and 0.0 are told apart), and the same indices.
    np.testing.assert_array_equal(got_values.view(np.uint32), want_values.view(np.uint32))
    np.testing.assert_array_equal(got_index, want_index)


finite = st.floats(width=32, allow_nan=False)
# Few distinct values (ties), signed zeros, subnormals, infinities and ordinary weights.
special = st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 2.0**-7, -(2.0**-7), 0.5, -0.5,
                           float("inf"), float("-inf"), 3.4e38, -3.4e38])


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(0, 300), elements=st.one_of(finite, special)),
       st.sampled_from([np.int32, np.int64, np.uint32]), st.randoms(use_true_random=False))
def test_sort_by_value_equals_the_lexsort_reference(values, index_type, random):
    # Indices as a fixing stage passes them: distinct, increasing (the free positions),
    # or in any order.
    index = np.sort(np.asarray(random.sample(range(10 * values.size + 1), values.size),
                               dtype=np.int64)).astype(index_type)
    check(values, index)
    shuffled = index.copy()
    random.shuffle(shuffled)
    check(values, shuffled)
    before = (values.copy(), shuffled.copy())
    sort_by_value(values, shuffled)
    assert np.array_equal(values.view(np.uint32), before[0].view(np.uint32))
    assert np.array_equal(shuffled, before[1])  # the inputs are not modified


def test_indices_beyond_32_bits_are_sorted_too():
    values = np.array([0.25, -1.0, 0.25, 0.0, -0.0], np.float32)
    index = np.array([2**40, 7, 3, 2**33, 2**34], np.int64)
    check(values, index)
    assert sort_by_value(values, index)[1].tolist() == [7, 2**34, 2**33, 3, 2**40]


def test_an_index_in_the_other_byte_order_is_read_by_value():
    values = np.array([0.5, -1.0, 0.5], np.float32)
    index = np.array([3, 1, 2], dtype=np.dtype(np.int32).newbyteorder())
    assert sort_by_value(values, index)[1].tolist() == [1, 2, 3]


def test_ties_come_in_index_order_on_a_large_array():
    # Over several of the blocks the positions are written and read back in.
    rng = np.random.default_rng(0)
    values = rng.choice(np.float32([-0.5, -0.0, 0.0, 0.125, 1.0]), size=(1 << 20) * 2 + 77)
    check(values, np.arange(values.size, dtype=np.int32))
    got_values, got_index = sort_by_value(values, index_dtype=np.int32)  # positions implied
    want_values, want_index = reference(values, np.arange(values.size, dtype=np.int32))
    assert got_index.dtype == np.int32
    np.testing.assert_array_equal(got_values.view(np.uint32), want_values.view(np.uint32))
    np.testing.assert_array_equal(got_index, want_index)


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="of one length"):
        sort_by_value(np.zeros(3, np.float32), np.arange(2))
    with pytest.raises(ValueError, match="must be 1-D"):
        sort_by_value(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="index must hold integers"):
        sort_by_value(np.zeros(3, np.float32), np.zeros(3))
    values, index = sort_by_value(np.zeros(0, np.float32), np.zeros(0, np.int32))
    assert values.size == index.size == 0 and index.dtype == np.int32
    assert sort_by_value(np.zeros(0, np.float32))[1].dtype == np.int64
