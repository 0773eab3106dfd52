"""The regulariser's per-weight term and its per-stage lookup table (numpy core and TF table)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.core import fixing_stage
from tfmot_wfn.core import regularizer_term as rt
from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE as G0
from tfmot_wfn.keras import regularizer_table
from tfmot_wfn.keras.network import FixingNetwork, run_fixing_stage, wrappers_of

TAU = 0.05


def slow_term(w, centres, tau=TAU, g0=G0):
    """The formula of the algorithm doc, one weight and one centre at a time (plain Python)."""
    out = []
    for x in np.asarray(w, np.float64):
        ds = []
        for c in np.asarray(centres, np.float64):
            if abs(x) <= g0:
                ds.append(0.0 if c == 0.0 else abs(x - c))
            else:
                ds.append(abs(x - c) / abs(x))
        m = min(ds)
        p = [math.exp(-(d - m) / tau) for d in ds]
        out.append(sum(pi * d for pi, d in zip(p, ds)) / sum(p))
    return np.array(out)


def realistic_palette(seed, fraction=0.9, distance=0.0075, n=6000, scale=0.2, g0=G0):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=n) * scale).astype(np.float32)
    return fixing_stage(w, np.zeros(n, bool), fraction, distance, g0).palette


palettes = st.lists(
    st.tuples(st.sampled_from([-1.0, 1.0]), st.integers(-9, 2), st.integers(0, 3)),
    min_size=1, max_size=30,
).map(lambda terms: np.unique(np.float32([s * 2.0 ** e * (1 + t / 4) for s, e, t in terms])))


@settings(max_examples=30, deadline=None)
@given(palette=palettes, with_zero=st.booleans(),
       w=hnp.arrays(np.float32, st.integers(1, 60),
                    elements=st.floats(-4.0, 4.0, width=32, allow_subnormal=False)))
def test_softmin_term_equals_the_formula_by_hand(palette, with_zero, w):
    if with_zero:
        palette = np.unique(np.append(palette, np.float32(0.0)))
    w = np.concatenate([w, palette, np.float32([0.0, G0, -G0, 1e-3])])
    np.testing.assert_allclose(rt.softmin_term(w, palette, TAU, G0), slow_term(w, palette),
                               rtol=1e-10, atol=1e-14)


def test_softmin_term_large_branch_and_empty_palette():
    assert np.all(rt.softmin_term([0.1, -2.0], [], TAU, G0) == 0.0)
    # At |w| = g0 the forced relative branch gives the limit from above.
    c = np.float32([0.0, 0.03125])
    above = np.nextafter(np.float32(G0), np.float32(1.0))
    forced = rt.softmin_term([G0], c, TAU, G0, large=True)[0]
    assert forced == pytest.approx(slow_term([above], c)[0], rel=1e-5)
    assert forced != pytest.approx(slow_term([G0], c)[0], rel=1e-3)  # there is a jump


# ----------------------------------------------------------------- buckets
@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 200),
                  elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=True)))
def test_bucket_rows_are_log_uniform_buckets_without_search(w):
    rows = rt.bucket_rows(w)
    # The boundaries from the definition: 2**BUCKET_BITS buckets per octave, split on the
    # top mantissa bits of the float32 (upper edge 2**e * (1 + m / 2**BUCKET_BITS)), the
    # first one reaching down to 0.
    k = np.arange(rt.BUCKETS + 1)
    per_octave = 1 << rt.BUCKET_BITS
    edges = np.ldexp(1.0 + (k % per_octave) / per_octave, rt.LOW_EXPONENT + k // per_octave)
    edges[0] = 0.0
    b = np.where(rows >= rt.BUCKETS, rows - rt.BUCKETS, rows)
    mag = np.abs(w.astype(np.float64))
    inside = (mag > 2.0 ** rt.LOW_EXPONENT) & (mag <= 2.0 ** rt.HIGH_EXPONENT)
    # Bucket b holds exactly the magnitudes in (edges[b], edges[b + 1]].
    assert np.all(edges[b[inside]] < mag[inside]) and np.all(mag[inside] <= edges[b[inside] + 1])
    assert np.all(b[mag <= 2.0 ** rt.LOW_EXPONENT] == 0)
    assert np.all(b[mag > 2.0 ** rt.HIGH_EXPONENT] == rt.BUCKETS - 1)
    assert np.all((rows >= rt.BUCKETS) == np.signbit(w))
    # 2**BUCKET_BITS buckets per octave.
    assert edges[1 + (1 << rt.BUCKET_BITS)] == 2 * edges[1]


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 200),
                  elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=True)))
def test_expanded_rows_stand_for_the_same_buckets(w):
    w = np.concatenate([w, np.float32([0.0, -0.0, G0, -G0, np.inf, -np.inf])])
    expanded = rt.expanded_rows(w)
    assert np.all((0 <= expanded) & (expanded < rt.EXPANDED_ROWS))
    # A table whose row r holds (r, -r): `expand` must lay row bucket_rows(w) at expanded_rows(w).
    rows = np.arange(2 * rt.BUCKETS, dtype=np.float64)
    table = rt.InterpolationTable(np.stack([rows, -rows], axis=1), max_error=0.0, zero_distance=G0)
    expanded_table = rt.expand(table)
    np.testing.assert_array_equal(expanded_table[expanded, 0], rt.bucket_rows(w))
    np.testing.assert_array_equal(expanded_table[expanded, 1], -rt.bucket_rows(w))


@pytest.mark.parametrize("g0", [G0, 0.01])
def test_tensorflow_table_equals_the_numpy_table(g0):
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.normal(size=20000).astype(np.float32) * 0.2,
                        rng.normal(size=2000).astype(np.float32) * 1e-5,
                        np.float32([0.0, -0.0, g0, -g0, 1e-30, -1e-30, 1e30, -1e30]),
                        np.nextafter(np.float32([g0, -g0]), np.float32([1, -1])),
                        np.nextafter(np.float32([g0, -g0]), np.float32([0, 0]))])
    np.testing.assert_array_equal(
        regularizer_table.expanded_rows(tf.constant(w)).numpy(), rt.expanded_rows(w))
    table = rt.interpolation_table(realistic_palette(0, g0=g0), TAU, g0)
    assert (table.split_row >= 0) == (g0 != G0)
    ex = rt.expand(table)
    a, b = regularizer_table.table_terms(
        tf.constant(w), ex,
        table.coefficients[2 * rt.BUCKETS:].astype(np.float32), table.split_row, g0)
    got = a.numpy().astype(np.float64) + b.numpy().astype(np.float64) * w.astype(np.float64)
    want = rt.evaluate_table(table, w)
    finite = np.abs(w) < 1e30
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------- table
@pytest.mark.parametrize("seed, fraction, distance", [(0, 0.3, 0.015), (1, 0.9, 0.0075),
                                                      (2, 0.95, 0.05)])
def test_table_is_within_its_reported_error_of_the_exact_term(seed, fraction, distance):
    palette = realistic_palette(seed, fraction, distance)
    table = rt.interpolation_table(palette, TAU, G0)
    assert table.max_error < 5e-6
    rng = np.random.default_rng(seed + 10)
    w = np.concatenate([(rng.normal(size=50000) * 0.3).astype(np.float32), palette,
                        palette * np.float32(1.001), np.float32([0, G0, -G0, 1e-9])])
    err = np.abs(rt.evaluate_table(table, w) - rt.softmin_term(w, palette, TAU, G0))
    assert err.max() <= 2 * table.max_error + 1e-7
    # On centres (the kinks) and at +-g0 (the jump) the table is exact up to rounding.
    special = np.concatenate([palette, np.float32([G0, -G0])])
    np.testing.assert_allclose(rt.evaluate_table(table, special),
                               rt.softmin_term(special, palette, TAU, G0), atol=1e-9)


def test_table_with_a_zero_distance_inside_a_bucket():
    g0 = 0.01  # not a power of two: its bucket is split at g0
    palette = realistic_palette(3, 0.9, 0.0075, g0=g0)
    table = rt.interpolation_table(palette, TAU, g0)
    assert table.split_row >= 0
    eps = np.float32(1e-6)
    w = np.float32([g0, -g0, g0 + eps, -g0 - eps, g0 - eps, -(g0 - eps)])
    np.testing.assert_allclose(rt.evaluate_table(table, w), rt.softmin_term(w, palette, TAU, g0),
                               atol=1e-5)


def test_empty_palette_table_is_zero():
    table = rt.interpolation_table([], TAU, G0)
    assert np.all(rt.evaluate_table(table, np.float32([0.0, 0.5, -3.0])) == 0.0)


def test_weights_beyond_the_table_get_the_last_value_and_no_slope():
    table = rt.interpolation_table([0.25, 1.0], TAU, G0)
    big = np.float32([2.0 ** 17, 2.0 ** 20])
    values = rt.evaluate_table(table, big)
    assert values[0] == values[1]
    assert 0.9 < values[0] <= 1.0  # relative distance to 1.0 tends to 1


# ------------------------------------------------------------ TF table in a model
def test_model_table_value_and_gradient_equal_the_numpy_table():
    fixed = tfmot_wfn.fix_weights(kh.dense_model(seed=4))
    run_fixing_stage(fixed, 0.5, 0.05)
    wrappers = wrappers_of(fixed)
    table = FixingNetwork.of(fixed).regularizer_table
    variables = [v for w in wrappers for v in w.fixable_variables]
    w = np.concatenate([v.numpy().ravel() for v in variables])
    free = np.concatenate([~m.ravel() for x in wrappers for m in x.mask_numpy()])
    palette = kh.wrapper_palette(wrappers[0])
    np_table = rt.interpolation_table(palette, TAU, G0)
    with tf.GradientTape() as tape:
        r = table.value()
    grads = np.concatenate([g.numpy().ravel() for g in tape.gradient(r, variables)])
    assert float(r) == pytest.approx(rt.evaluate_table(np_table, w)[free].mean(), rel=1e-5)
    assert float(r) == pytest.approx(rt.softmin_term(w, palette, TAU, G0)[free].mean(), rel=1e-5)
    rows = rt.coefficient_rows(np_table, w)
    expected = np.where(free, np_table.coefficients[rows, 1], 0.0) / free.sum()
    assert table.max_error == np_table.max_error
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-9)
    # The exact path agrees.
    exact = float(tfmot_wfn.regularization_value(fixed, exact=True))
    assert float(tfmot_wfn.regularization_value(fixed)) == pytest.approx(exact, rel=1e-5)


def test_table_follows_stages_and_direct_changes():
    fixed = tfmot_wfn.fix_weights(kh.dense_model(seed=5))
    assert float(tfmot_wfn.regularization_value(fixed)) == 0.0
    run_fixing_stage(fixed, 0.3, 0.05)
    r1 = float(tfmot_wfn.regularization_value(fixed))
    run_fixing_stage(fixed, 0.6, 0.05)  # refreshes the table (new palette and free mask)
    r2 = float(tfmot_wfn.regularization_value(fixed))
    assert r1 > 0 and r2 > 0 and r1 != r2
    assert r2 == pytest.approx(float(tfmot_wfn.regularization_value(fixed, exact=True)), rel=1e-5)
    # A palette written directly (load_weights, a restore) is noticed by eager calls.
    w0 = wrappers_of(fixed)[0]
    palette = w0.palette.numpy()
    for w in wrappers_of(fixed):
        w.palette.assign(palette * 2)
    r3 = float(tfmot_wfn.regularization_value(fixed))
    assert r3 == pytest.approx(float(tfmot_wfn.regularization_value(fixed, exact=True)), rel=1e-5)
    assert r3 != pytest.approx(r2, rel=1e-3)
