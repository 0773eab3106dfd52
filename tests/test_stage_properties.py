"""Property-based tests of the network-wide fixing stage as the Keras glue runs it.

`tests/test_greedy_fixing.py` checks the numpy stage itself. Here hypothesis drives
multi-stage runs of `run_fixing_stage` over a real multi-layer model (several
weights of different scales, training simulated between stages by moving the free
weights, float32 and mixed_float16 policies) and checks after every stage:

* the quota is met exactly and the fixed set only grows (per weight, per entry);
* previously fixed entries never change: effective value, `fixed_values`
  variable and the underlying layer variable, bit for bit;
* free entries are not touched by a stage;
* every newly fixed value is 0 or a sum of at most max_order + 1 signed powers of
  two (a candidate of the stage), or a centre already in the palette;
* every wrapper holds the same palette, equal to the set of fixed values;
* no NaN or Inf anywhere; under mixed_float16 every fixed value is a float16.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.core.greedy_fixing import quota_for
from tfmot_wfn.core.powers_of_two import signed_digits
from tfmot_wfn.keras.compat import autocasts
from tfmot_wfn.keras.network import run_fixing_stage, wrappers_of

L = keras.layers
PAPER = list(tfmot_wfn.PAPER_FRACTIONS)


def _model():
    inp = keras.Input((6,))
    h = L.Dense(24, name="a")(inp)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Conv1D(4, 3, padding="same", name="conv")(L.Reshape((6, 4))(h))
    out = L.Dense(5, name="b")(L.Flatten()(h))
    return tfmot_wfn.fix_weights(keras.Model(inp, out))


@pytest.fixture(scope="module")
def models():
    previous = keras.mixed_precision.global_policy()
    try:
        built = {}
        for name in ("float32", "mixed_float16"):
            keras.mixed_precision.set_global_policy(name)
            keras.utils.set_random_seed(0)
            built[name] = _model()
        return built
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _reset(model, rng, scales, zero_fraction):
    """Fresh random weights (one scale per weight) and an empty fixing state."""
    k = 0
    for wrapper in wrappers_of(model):
        for i, v in enumerate(wrapper.fixable_variables):
            scale, k = scales[k % len(scales)], k + 1
            w = rng.normal(0.0, scale, v.shape)
            w[rng.random(v.shape) < zero_fraction] = 0.0
            v.assign(w.astype("float32"))
            wrapper.masks[i].assign(np.zeros(v.shape, bool))
            wrapper.fixed_values[i].assign(np.zeros(v.shape, "float32"))
        wrapper.palette.assign(np.zeros(wrapper.palette_capacity, "float32"))
        wrapper.palette_size.assign(0)


def _train_free(model, rng, rel):
    """Stand-in for training between stages: move the free entries only."""
    for wrapper in wrappers_of(model):
        for v, mask in zip(wrapper.fixable_variables, wrapper.mask_numpy()):
            values = v.numpy()
            noise = rng.normal(0.0, rel * (np.std(values) + 1e-6), values.shape)
            v.assign(np.where(mask, values, values + noise).astype("float32"))


def _state(model):
    ws = wrappers_of(model)
    return dict(
        masks=[m for w in ws for m in w.mask_numpy()],
        effective=[e for w in ws for e in w.effective_numpy()],
        fixed_values=[f.numpy() for w in ws for f in w.fixed_values],
        variables=[v.numpy() for w in ws for v in w.fixable_variables],
        palettes=[w.palette.numpy()[: int(w.palette_size.numpy())] for w in ws],
    )


def _bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@settings(deadline=None, max_examples=60, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    policy=st.sampled_from(["float32", "mixed_float16"]),
    seed=st.integers(0, 2**16),
    scales=st.lists(st.sampled_from([1e-3, 2.0**-9, 0.02, 0.1, 0.5, 3.0]), min_size=1, max_size=4),
    zero_fraction=st.sampled_from([0.0, 0.0, 0.3, 1.0]),
    start=st.integers(0, 7),
    stages=st.integers(2, 4),
    delta=st.sampled_from([0.0075, 0.015, 0.05, 0.2]),
    rel=st.sampled_from([0.0, 0.01, 0.1]),
)
def test_multi_stage_network_invariants(models, policy, seed, scales, zero_fraction, start,
                                        stages, delta, rel):
    model = models[policy]
    rng = np.random.default_rng(seed)
    _reset(model, rng, scales, zero_fraction)
    fractions = PAPER[start:start + stages]
    n = sum(m.size for m in _state(model)["masks"])
    for i, fraction in enumerate(fractions):
        if i:
            _train_free(model, rng, rel)
        before = _state(model)
        summary = run_fixing_stage(model, fraction, delta * max(1, len(fractions) - i))
        after = _state(model)
        previous = sum(int(m.sum()) for m in before["masks"])
        fixed_now = sum(int(m.sum()) for m in after["masks"])
        assert fixed_now == summary.fixed == max(previous, quota_for(n, fraction))
        palette = after["palettes"][0]
        assert all(np.array_equal(p, palette) for p in after["palettes"])
        assert np.all(np.isfinite(palette))
        old_palette = set(before["palettes"][0].tolist())
        fixed_values = np.concatenate([e[m] for e, m in zip(after["effective"], after["masks"])])
        np.testing.assert_array_equal(np.unique(fixed_values), palette)
        for k, (m0, m1) in enumerate(zip(before["masks"], after["masks"])):
            assert np.all(m1[m0]), "the fixed set shrank"
            for key in ("effective", "fixed_values", "variables"):
                assert np.array_equal(_bits(after[key][k][m0]), _bits(before[key][k][m0])), key
            # Free entries are not touched by the stage.
            free = ~m1
            assert np.array_equal(_bits(after["effective"][k][free]),
                                  _bits(before["effective"][k][free]))
            # The underlying variable holds the fixed values too.
            assert np.array_equal(after["variables"][k][m1], after["effective"][k][m1])
            assert np.all(np.isfinite(after["effective"][k]))
            for value in np.unique(after["effective"][k][m1 & ~m0]).tolist():
                if value not in old_palette:
                    assert len(signed_digits(value)) <= summary.max_order + 1, value
        if policy == "mixed_float16":
            # Weights the layers read in float16 (BatchNormalization keeps gamma/beta float32).
            kernels = [e[m] for w in wrappers_of(model)
                       for v, e, m in zip(w.fixable_variables, w.effective_numpy(), w.mask_numpy())
                       if w.layer.compute_dtype == "float16" and autocasts(v)]
            assert kernels
            for values in kernels:
                assert np.array_equal(values.astype(np.float16).astype(np.float32), values)


def test_all_zero_network_over_the_paper_schedule():
    model = kh.dense_model()
    fixed = tfmot_wfn.fix_weights(model)
    for w in wrappers_of(fixed):
        for v in w.fixable_variables:
            v.assign(np.zeros(v.shape, "float32"))
    for i, fraction in enumerate(PAPER):
        run_fixing_stage(fixed, fraction, 0.015 * max(1, 10 - i))
    assert kh.flat_masks(fixed).all()
    np.testing.assert_array_equal(tfmot_wfn.palette(fixed), [0.0])
