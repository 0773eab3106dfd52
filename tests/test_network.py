"""FixingNetwork: one object for the wrappers, their shared settings, the flat weight layout,
the stage, the regulariser table and the statistics that report, summaries, the fix job and
the callback print."""

from __future__ import annotations

import numpy as np
import pytest

from tfmot_wfn.keras.compat import keras
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.apps.fix_job import _network_numbers
from tfmot_wfn.keras import summaries
from tfmot_wfn.keras.fixing_callbacks import network_statistics
from tfmot_wfn.keras.network import FixingNetwork, run_fixing_stage, wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

L = keras.layers


def nested_model():
    """A nested model with a BatchNormalization and a layer without weights."""
    inner = keras.Sequential([keras.Input((6,)), L.Dense(5, name="inner_dense"),
                              L.BatchNormalization(name="bn")], name="inner")
    inp = keras.Input((8,))
    h = L.Dense(6, activation="relu", name="first")(inp)
    h = inner(h)
    h = L.Dropout(0.1)(h)
    out = L.Dense(3, name="head")(h)
    return keras.Model(inp, out, name="outer")


@pytest.fixture
def staged():
    """A wrapped model after one stage at 50%, with exact zeros among its weights."""
    fixed = tfmot_wfn.fix_weights(nested_model(), distance=0.02)
    head = fixed.get_layer("head")  # the output layer's wrapper keeps its name
    kernel = head.fixable_variables[0]
    kernel.assign(np.where(np.arange(kernel.shape[0])[:, None] % 2 == 0, kernel.numpy(), 0.0))
    run_fixing_stage(fixed, 0.5, 0.05)
    return fixed


def test_flat_views_cover_every_fixable_weight_exactly_once(staged):
    network = FixingNetwork.of(staged)
    variables = [v for w in wrappers_of(staged) for v in w.fixable_variables]
    assert [id(s.variable) for s in network.slots] == [id(v) for v in variables]
    assert len({id(s.variable) for s in network.slots}) == len(variables)
    # Contiguous, in order, from 0 to size, each as long as its weight.
    assert network.slots[0].start == 0 and network.slots[-1].stop == network.size
    for before, after in zip(network.slots, network.slots[1:]):
        assert before.stop == after.start
    for slot in network.slots:
        assert slot.stop - slot.start == int(np.prod(slot.variable.shape))
        assert slot.wrapper.fixable_variables[slot.index] is slot.variable
    assert network.size == sum(int(np.prod(v.shape)) for v in variables)
    assert network.size == tfmot_wfn.report(staged).total_weights
    # The flat vectors are the wrappers' effective values and masks, in slot order.
    values, masks = network.flat_weights()
    for slot in network.slots:
        effective = slot.wrapper.effective_numpy()[slot.index]
        mask = slot.wrapper.mask_numpy()[slot.index]
        np.testing.assert_array_equal(values[slot.start:slot.stop], effective.ravel())
        np.testing.assert_array_equal(masks[slot.start:slot.stop], mask.ravel())


def test_statistics_equal_the_report_callback_summaries_and_fix_job(staged):
    stats = FixingNetwork.of(staged).statistics()
    report = tfmot_wfn.report(staged)
    assert 0.45 < stats.fixed_fraction < 0.55 and stats.zero_fraction > 0
    for name in ("total_weights", "fixed_fraction", "unique_values", "unique_values_nonzero",
                 "entropy_bits", "entropy_bits_nonzero", "zero_fraction"):
        assert getattr(stats, name) == getattr(report, name), name
    assert [(p["value"], p["count"]) for p in report.palette] == list(
        zip(stats.palette.tolist(), stats.palette_counts.tolist()))
    assert network_statistics(staged) == {
        "fixed_fraction": stats.fixed_fraction, "unique_values": stats.unique_values,
        "palette_size": stats.palette_size, "entropy_bits": stats.entropy_bits}
    assert _network_numbers(staged) == {
        "fixed_fraction": stats.fixed_fraction, "unique_values": stats.unique_values,
        "entropy_bits": stats.entropy_bits}
    values, counts = summaries.palette_usage(staged)
    np.testing.assert_array_equal(values, stats.palette)
    np.testing.assert_array_equal(counts, stats.palette_counts)
    assert tfmot_wfn.fixed_fraction(staged) == stats.fixed_fraction
    assert tfmot_wfn.unique_weights(staged, include_zero=False) == stats.unique_values_nonzero
    # The palette the network holds is the palette of the fixed weights.
    np.testing.assert_array_equal(FixingNetwork.of(staged).palette(), stats.palette)
    # Numbers computed directly from the wrappers.
    values = np.concatenate([a.ravel() for w in wrappers_of(staged) for a in w.effective_numpy()])
    masks = np.concatenate([m.ravel() for w in wrappers_of(staged) for m in w.mask_numpy()])
    assert stats.fixed_fraction == masks.mean()
    assert stats.unique_values == np.unique(values + 0.0).size
    assert stats.palette_size == np.unique(values[masks] + 0.0).size


def test_settings_come_from_the_config():
    schedule = tfmot_wfn.StagedFixing((0.5, 1.0), steps_per_stage=7)
    fixed = tfmot_wfn.fix_weights(kh.dense_model(), fixing_schedule=schedule, distance=0.02,
                                  regularization=0.3, temperature=0.07, zero_distance=2 ** -6,
                                  palette_capacity=512)
    network = FixingNetwork.of(fixed)
    config = network.config
    assert isinstance(config, tfmot_wfn.FixingConfig)
    assert (network.distance, network.regularization, network.temperature,
            network.zero_distance, network.palette_capacity) == (0.02, 0.3, 0.07, 2 ** -6, 512)
    # A copy of it, shared by the wrappers (fit resolves it in place; the caller's stays as is).
    assert network.fixing_schedule == schedule and network.fixing_schedule is not schedule
    assert all(w.fixing_schedule is network.fixing_schedule for w in network.wrappers)
    for w in network.wrappers:
        assert w.fixing_config == config
        assert w.distance == 0.02 and w.palette_capacity == 512
        with pytest.raises(AttributeError):
            w.distance = 0.5  # read-only: the settings live in the frozen config
    summary = network.run_fixing_stage(0.5, 0.02)
    assert network.palette().size == summary.palette_size <= 512


def test_the_network_is_cached_on_the_model_and_owns_one_regularizer_table():
    fixed = tfmot_wfn.fix_weights(kh.dense_model())
    network = FixingNetwork.of(fixed)
    assert FixingNetwork.of(fixed) is network
    assert FixingNetwork.of(list(network.wrappers)) is network  # same wrappers: same network
    assert FixingNetwork.of(network) is network
    table = network.regularizer_table
    assert FixingNetwork.of(fixed).regularizer_table is table
    assert float(table.free_count.numpy()) == network.size  # nothing fixed yet
    # A stage run through another network over these wrappers refreshes this table too.
    FixingNetwork(network.wrappers).run_fixing_stage(0.5, 0.05)
    fixed_count = int(network.flat_weights()[1].sum())
    assert float(table.free_count.numpy()) == network.size - fixed_count
    assert float(tfmot_wfn.regularization_value(fixed)) == pytest.approx(
        float(tfmot_wfn.regularization_value(fixed, exact=True)), rel=1e-5)


def test_the_cache_follows_the_model_and_is_not_saved(tmp_path):
    fixed = tfmot_wfn.fix_weights(kh.dense_model())
    network = FixingNetwork.of(fixed)
    path = str(tmp_path / "m.keras")
    fixed.save(path)
    with tfmot_wfn.fixing_scope():
        loaded = keras.models.load_model(path)
    other = FixingNetwork.of(loaded)
    assert other is not network
    assert not set(map(id, other.wrappers)) & set(map(id, network.wrappers))
    assert other.config == network.config


def test_wrappers_with_different_settings_do_not_make_a_network():
    a = tfmot_wfn.fix_weights(L.Dense(3, name="a"), distance=0.015)
    b = tfmot_wfn.fix_weights(L.Dense(3, name="b"), distance=0.03)
    for w in (a, b):
        w.build((None, 4))
    with pytest.raises(ValueError, match="'fix_a' and 'fix_b' have different fixing settings"):
        FixingNetwork.of([a, b])
    # Per-layer settings that the network does not share may differ.
    c = tfmot_wfn.fix_weights(L.Dense(3, name="c"), fix_biases=False)
    c.build((None, 4))
    assert FixingNetwork.of([a, c]).size == 4 * 3 + 3 + 4 * 3


def test_of_refuses_what_holds_no_wrapper():
    with pytest.raises(ValueError, match="No WeightFixingWrapper found"):
        FixingNetwork.of(kh.dense_model())
    assert FixingNetwork.find(kh.dense_model()) is None
    with pytest.raises(TypeError, match="takes WeightFixingWrappers"):
        FixingNetwork([L.Dense(2)])
