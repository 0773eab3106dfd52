"""``fix_weights(..., int8_exact=True)``: every kernel output channel is int8 codes times one 2^e.

The per-channel snapping (`tfmot_wfn.core.int8_channels`) must equal a slow per-channel,
per-weight reference written from its documented rule, move only the weights a stage has
just fixed, and leave every channel exact (the exporter's own test, `fit_power_of_two`).
On a small Dense + Conv2D + DepthwiseConv2D model taken through the ten stages, every
kernel channel ends exact, fixed weights never move, and the int8 export stores every
channel exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfmot_wfn.core.greedy_fixing import fixing_stage
from tfmot_wfn.core.int8_channels import (
    ChannelBlock, exact_channels, holding_exponents, snap_stage, snap_values,
)
from tfmot_wfn.tflite.int8_exact import channel_rows, finest_exponent, fit_power_of_two


# ----------------------------------------------------------------- reference
def _reference_exponent(w_row, fixed_row, v_row):
    """The finest 2^e holding the row's largest value, no finer than its fixed values allow."""
    largest = max([abs(float(x)) for x in w_row] + [abs(float(x)) for x in v_row])
    e = 0
    if largest > 0:
        e = -1100
        while math.ldexp(127.0, e) < largest:
            e += 1
    finest = finest_exponent(np.asarray(w_row)[np.asarray(fixed_row)])
    return e if finest is None else min(e, finest)


def _reference_snap(c, e, palette, tolerance):
    code = math.ldexp(c, -e)
    if code == round(code) and abs(code) <= 127:
        return c
    nearest = math.ldexp(max(-127, min(127, round(code))), e)  # round(): ties to even
    known = sorted(set(float(p) for p in palette) | {0.0})
    allowed = [p for p in known
               if math.ldexp(p, -e) == round(math.ldexp(p, -e)) and abs(math.ldexp(p, -e)) <= 127]
    best = min(allowed, key=lambda p: (abs(p - c), p))
    if abs(best - c) <= max(abs(nearest - c), tolerance * abs(c)):
        return best
    return nearest


def reference_snap_stage(weights, fixed, values, fixed_after, blocks, distance):
    """`snap_stage` one channel and one weight at a time (python floats)."""
    out = np.array(values, np.float32)
    palette = sorted(set(np.asarray(values)[fixed_after].tolist()))
    for block in blocks:
        outer = (block.stop - block.start) // (block.channels * block.inner)
        positions = np.arange(block.start, block.stop).reshape(outer, block.channels,
                                                               block.inner)
        for k in range(block.channels):
            idx = positions[:, k, :].ravel()
            e = _reference_exponent(weights[idx], fixed[idx], values[idx])
            for i in idx:
                if fixed_after[i] and not fixed[i]:
                    out[i] = np.float32(_reference_snap(float(values[i]), e, palette, distance))
    return out


def _random_stage(seed, channels, inner, outer):
    """A block's weights, an exact earlier-fixed part, and a stage's centres on top."""
    rng = np.random.default_rng(seed)
    n = outer * channels * inner
    scale = np.exp(rng.normal(size=channels) * 2.0) * 0.1
    w = (rng.normal(size=(outer, channels, inner)) * scale[None, :, None]).ravel()
    channel = np.broadcast_to(np.arange(channels)[None, :, None], (outer, channels, inner)).ravel()
    fixed = rng.random(n) < rng.random()
    # Earlier-fixed values: int8 codes at a per-channel power of two near the channel's range.
    e_fixed = (np.ceil(np.log2(scale * 3 / 127)) + rng.integers(-1, 2, channels))[channel]
    codes = np.clip(np.rint(np.ldexp(w, -e_fixed.astype(int))), -127, 127)
    w = np.where(fixed, np.ldexp(codes, e_fixed.astype(int)), w).astype(np.float32)
    fixed_after = fixed | (rng.random(n) < 0.6)
    # Centres: the weight with a random number of mantissa bits, some exact, some not.
    bits = rng.integers(1, 14, n)
    e_w = np.frexp(np.where(w == 0, 1.0, w.astype(np.float64)))[1] - bits
    centres = np.ldexp(np.rint(np.ldexp(w.astype(np.float64), -e_w)), e_w)
    centres = np.where(rng.random(n) < 0.1, 0.0, centres)
    values = np.where(fixed_after & ~fixed, centres, w).astype(np.float32)
    return w, fixed, values, fixed_after, ChannelBlock(0, n, channels, inner)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), channels=st.integers(1, 9), inner=st.integers(1, 3),
       outer=st.integers(1, 12), distance=st.sampled_from([0.015, 0.05, 0.2]))
def test_snapping_equals_the_per_channel_reference(seed, channels, inner, outer, distance):
    w, fixed, values, fixed_after, block = _random_stage(seed, channels, inner, outer)
    got, snapped = snap_stage(w, fixed, values, fixed_after, [block], distance)
    want = reference_snap_stage(w, fixed, values, fixed_after, [block], distance)
    np.testing.assert_array_equal(got, want)
    assert snapped == int(np.count_nonzero(got != values))
    np.testing.assert_array_equal(got[~(fixed_after & ~fixed)], values[~(fixed_after & ~fixed)])
    # The earlier-fixed values were exact, so every channel's fixed values now are.
    assert exact_channels(got, [block], fixed_after) == (channels, channels)


def test_channel_block_rows_follow_the_output_axis():
    kernel = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    last = ChannelBlock(0, kernel.size, 5)
    np.testing.assert_array_equal(last.rows(kernel.ravel()), channel_rows(kernel, -1))
    transposed = ChannelBlock(0, kernel.size, 4, inner=5)  # (kh, kw, out, in)
    np.testing.assert_array_equal(transposed.rows(kernel.ravel()), channel_rows(kernel, -2))
    depthwise = ChannelBlock(0, kernel.size, 20)  # (kh, kw, in, multiplier)
    np.testing.assert_array_equal(depthwise.rows(kernel.ravel()),
                                  channel_rows(kernel.reshape(2, 3, 20), -1))
    flat = np.zeros(kernel.size + 3, np.float32)
    transposed.put_rows(flat, transposed.rows(kernel.ravel()))
    np.testing.assert_array_equal(flat[:kernel.size], kernel.ravel())
    with pytest.raises(ValueError, match="multiple of channels"):
        ChannelBlock(0, 10, 3)


def test_holding_exponent_is_the_finest_that_fits_the_largest_value():
    got = holding_exponents(np.array([127 * 2.0 ** -7, 127 * 2.0 ** -7 * (1 + 2 ** -40), 1.0, 0.0]))
    np.testing.assert_array_equal(got, [-7, -6, -6, 0])


def test_snapping_prefers_a_palette_value_within_the_stage_distance():
    e = np.full(5, -5)  # step 1/32, codes up to 127 (3.97)
    centres = np.array([0.5 + 2 ** -7, 0.3, 0.7, 5.0, 0.01])
    palette = np.array([0.5, 0.5 + 2 ** -7, 9 * 2.0 ** -5, 0.25])
    got = snap_values(centres, e, palette, tolerance=0.1)
    # 0.5078: 0.5 is both the nearest multiple and in the palette; 0.3: the palette's 9/32 is
    # within 10% (the nearest multiple 10/32 is not in the palette); 0.7: no palette value
    # within 10%, the nearest multiple 22/32; 5.0: beyond the range, clipped to 127/32; 0.01: 0.
    np.testing.assert_array_equal(got, [0.5, 9 / 32, 22 / 32, 127 / 32, 0.0])
    far = snap_values(np.array([0.3]), np.array([-5]), np.array([0.25]), tolerance=0.05)
    np.testing.assert_array_equal(far, [0.3125])  # 0.25 is 17% away: the nearest multiple


def test_stages_keep_channels_exact_and_fixed_values_still():
    rng = np.random.default_rng(4)
    w = (rng.normal(size=(3, 3, 8, 16)) * np.exp(rng.normal(size=16)) * 0.1).astype(np.float32)
    blocks = [ChannelBlock(0, w.size, 16)]
    values, fixed = w.ravel().copy(), np.zeros(w.size, bool)
    for fraction, distance in [(0.3, 0.1), (0.6, 0.05), (0.9, 0.02), (1.0, 0.015)]:
        result = fixing_stage(values, fixed, fraction, distance)
        new, _ = snap_stage(values, fixed, result.values, result.fixed, blocks, distance)
        np.testing.assert_array_equal(new[fixed], values[fixed])
        assert exact_channels(new, blocks, result.fixed) == (16, 16)
        drift = rng.normal(size=w.size).astype(np.float32) * 0.01
        values, fixed = np.where(result.fixed, new, values + drift).astype(np.float32), result.fixed
    for row in channel_rows(values.reshape(w.shape), -1):
        assert fit_power_of_two(row).exact


# ------------------------------------------------------------------- Keras
def _small_model():
    from tfmot_wfn.keras.compat import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    h = L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same", activation="relu",
                          name="depthwise")(h)
    h = L.Flatten()(h)
    out = L.Dense(10, activation="softmax", name="dense")(h)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def trained_small(digits):
    import keras_helpers
    from tfmot_wfn.keras.compat import keras

    model = keras_helpers.compile_classifier(_small_model(), keras.optimizers.Adam(3e-3))
    model.fit(digits.x_train, digits.y_train, epochs=5, batch_size=32, verbose=0)
    return model


#: The fixing rule of the schedule runs below (the default before "gentle" on depthwise networks).
PINNED_RULE = "late_third"


@pytest.fixture(scope="module")
def exact_run(trained_small, digits):
    import keras_helpers

    # The rule is pinned where the constraint has work to do: under "gentle", the default of
    # this depthwise network, every channel came out exact without a snap.
    return keras_helpers.run_full_schedule(trained_small, digits, steps_per_stage=10,
                                           int8_exact=True, rule=PINNED_RULE)


def _kernels(model):
    """``(layer name, kernel as output-channel rows)`` of every kernel."""
    import tfmot_wfn

    plain = tfmot_wfn.strip_fixing(model)
    out = []
    for layer in plain.layers:
        if not hasattr(layer, "kernel"):
            continue
        kernel = np.asarray(layer.kernel.numpy())
        if "depthwise" in layer.name:
            kernel = kernel.reshape(kernel.shape[:-2] + (-1,))
        out.append((layer.name, channel_rows(kernel, -1)))
    return out


def test_every_kernel_channel_is_exact_after_the_schedule(exact_run, trained_small, digits):
    import tfmot_wfn
    from tfmot_wfn.keras.network import FixingNetwork

    network = FixingNetwork.of(exact_run.model)
    assert network.statistics().fixed_fraction == 1.0
    kernels = _kernels(exact_run.model)
    assert [name for name, _ in kernels] == ["conv", "depthwise", "dense"]
    channels = [fit_power_of_two(row).exact for _, rows in kernels for row in rows]
    assert len(channels) == 8 + 16 + 10 and all(channels)
    assert [b.channels for b in network.channel_blocks] == [8, 16, 10]
    assert sum(s.int8_snapped for s in exact_run.callback.history) > 0
    # Without the constraint the same run leaves some channels inexact (27 of 34).
    import keras_helpers

    free = keras_helpers.run_full_schedule(trained_small, digits, steps_per_stage=10,
                                           rule=PINNED_RULE)
    assert not all(fit_power_of_two(row).exact for _, rows in _kernels(free.model) for row in rows)
    assert all(s.int8_snapped == 0 for s in free.callback.history)
    report = tfmot_wfn.report(exact_run.model)
    assert report.int8_exact is True and "int8-exact kernel channels" in str(report)
    assert exact_run.accuracy > 0.8


def test_every_kernel_channel_is_exact_under_the_depthwise_default(trained_small, digits):
    # The same run under rule="auto", which picks "gentle" for this depthwise network.
    import keras_helpers
    import tfmot_wfn

    run = keras_helpers.run_full_schedule(trained_small, digits, steps_per_stage=10, int8_exact=True)
    assert tfmot_wfn.report(run.model).rule == "gentle"
    channels = [fit_power_of_two(row).exact for _, rows in _kernels(run.model) for row in rows]
    assert len(channels) == 8 + 16 + 10 and all(channels)
    assert run.accuracy > 0.8


def test_fixed_weights_never_move_between_stages(exact_run):
    snapshots = exact_run.snapshots
    assert len(snapshots) == 10
    for before, after in zip(snapshots, snapshots[1:]):
        assert np.all(after["masks"][before["masks"]])
        np.testing.assert_array_equal(after["values"][before["masks"]],
                                      before["values"][before["masks"]])
    import keras_helpers

    final = keras_helpers.flat_values(exact_run.model)
    last = snapshots[-1]
    np.testing.assert_array_equal(final[last["masks"]], last["values"][last["masks"]])


def test_int8_export_stores_every_channel_exactly(exact_run, digits, tmp_path):
    import tfmot_wfn
    from tfmot_wfn import lite
    from tfmot_wfn.tflite import flatbuffer as fb
    from tfmot_wfn.tflite.int8_exact import WEIGHT_OPS, dequantized_weight, int8_weight_ops

    path = str(tmp_path / "exact_int8.tflite")
    result = lite.export_tflite(exact_run.model, path, mode="int8",
                                representative_data=digits.x_train)
    assert result.total_channels == 8 + 16 + 10
    assert result.exact_channels == result.total_channels and result.inexact == []
    kernels = dict(_kernels(exact_run.model))
    model = fb.read_model(open(path, "rb").read())
    worst, seen = 0.0, []
    for s, op in int8_weight_ops(model):
        layer = next(w.layer for w in result.int8_weights
                     if w.tensor == fb.tensor_name(model.subgraphs[s].tensors[int(op.inputs[1])]))
        weight = dequantized_weight(model, model.subgraphs[s], op)
        rows = channel_rows(weight, WEIGHT_OPS[fb.op_name(model, op)])
        worst = max(worst, float(np.abs(rows - kernels[layer]).max()))
        seen.append(layer)
    assert sorted(seen) == ["conv", "dense", "depthwise"]
    assert worst == 0.0
    assert tfmot_wfn.report(tfmot_wfn.strip_fixing(exact_run.model)).int8_exact is None


def test_kernel_layouts_name_each_layers_output_channels():
    from tfmot_wfn.keras.compat import keras, short_name
    from tfmot_wfn.keras.kernel_channels import output_channel_layout

    L = keras.layers
    cases = {
        L.Dense(5): (4,), L.Conv2D(6, 3): (5, 5, 4), L.DepthwiseConv2D(3, depth_multiplier=2):
        (5, 5, 4), L.SeparableConv2D(6, 3, depth_multiplier=3): (5, 5, 4),
        L.Conv2DTranspose(6, 3): (5, 5, 4), L.Embedding(10, 3): (4,),
        L.BatchNormalization(): (2, 2, 4),
    }
    found = {}
    for layer, shape in cases.items():
        layer.build((None,) + shape)
        for v in layer.weights:
            found[(type(layer).__name__, short_name(v))] = output_channel_layout(layer, v)
    assert found[("Dense", "kernel")] == (5, 1)
    assert found[("Conv2D", "kernel")] == (6, 1)
    assert found[("DepthwiseConv2D", "kernel")] == (8, 1)          # in * multiplier
    assert found[("SeparableConv2D", "depthwise_kernel")] == (12, 1)
    assert found[("SeparableConv2D", "pointwise_kernel")] == (6, 1)
    assert found[("Conv2DTranspose", "kernel")] == (6, 4)          # (kh, kw, out, in)
    unconstrained = [k for k, v in found.items() if v is None]
    assert sorted(unconstrained) == sorted(
        [("Dense", "bias"), ("Conv2D", "bias"), ("DepthwiseConv2D", "bias"),
         ("SeparableConv2D", "bias"), ("Conv2DTranspose", "bias"), ("Embedding", "embeddings")]
        + [("BatchNormalization", n) for n in ("gamma", "beta", "moving_mean",
                                               "moving_variance")])


# ---------------------------------------------------------------- settings
def test_int8_exact_is_validated_and_round_trips_through_the_config():
    import tfmot_wfn
    from tfmot_wfn.keras.fixing_config import NETWORK_SETTINGS, FixingConfig
    from tfmot_wfn.keras.fixing_wrapper import WeightFixingWrapper

    assert "int8_exact" in NETWORK_SETTINGS and FixingConfig().int8_exact is False
    with pytest.raises(TypeError, match="int8_exact must be True or False"):
        FixingConfig(int8_exact="yes")
    model = _small_model()
    with pytest.raises(TypeError, match="int8_exact must be True or False"):
        tfmot_wfn.fix_weights(model, int8_exact=1)
    fixed = tfmot_wfn.fix_weights(model, int8_exact=True)
    config = fixed.get_layer("dense").get_config()  # the output layer: its name kept
    assert config["int8_exact"] is True
    assert WeightFixingWrapper.from_config(config).fixing_config.int8_exact is True
    plain = tfmot_wfn.fix_weights(model).get_layer("dense").get_config()
    assert "int8_exact" not in plain  # configs stay those of earlier versions
    assert WeightFixingWrapper.from_config(plain).int8_exact is False
    assert tfmot_wfn.report(fixed).int8_exact is True


def test_wrappers_must_agree_on_int8_exact():
    from tfmot_wfn.keras.compat import keras
    from tfmot_wfn.keras.fixing_wrapper import WeightFixingWrapper
    from tfmot_wfn.keras.network import FixingNetwork

    a = WeightFixingWrapper(keras.layers.Dense(3), int8_exact=True)
    b = WeightFixingWrapper(keras.layers.Dense(3))
    a.build((None, 4))
    b.build((None, 3))
    with pytest.raises(ValueError, match="int8_exact"):
        FixingNetwork([a, b])
