"""``export_tflite(mode="int8")``: a fully integer TFLite file whose weights are exact.

The models here are the demo CNN (Conv-BN-ReLU x2, Flatten, Dense), trained briefly,
whose kernels are rounded per output channel to int8 codes times a power of two (what
a fixed network's channels are when they fit 8 bits): every kernel must then be stored
exactly, with and without a BatchNorm folded in by the converter.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from tfmot_wfn.keras.compat import keras, short_name
import tfmot_wfn
from tfmot_wfn import lite
from tfmot_wfn.export.int8_export import (
    DEFAULT_CALIBRATION_SAMPLES, MISSING_DATA, calibration_samples, convert_int8, rewrite_exact,
)
from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.int8_exact import (
    WEIGHT_OPS, dequantized_weight, finest_exponent, fit_power_of_two, int8_weight_ops,
    read_int8_metadata, widest_codes,
)

L = keras.layers
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ helpers
def round_to_power_of_two_codes(model):
    """Round every kernel, per output channel, to int8 codes times a power of two (in place)."""
    for layer in model.layers:
        for v in layer.weights:
            if short_name(v) not in ("kernel", "depthwise_kernel") or len(v.shape) < 2:
                continue
            w = np.asarray(v.numpy(), np.float64)
            big = np.abs(w.reshape(-1, w.shape[-1])).max(axis=0)
            e = np.ceil(np.log2(np.maximum(big, 1e-30) / 127.0))
            v.assign((np.round(w / 2.0 ** e) * 2.0 ** e).astype(np.float32))
    return model


def batchnorm_scale(bn):
    values = {short_name(v): v.numpy() for v in bn.weights}
    return (values["gamma"] * (np.float32(1) / np.sqrt(
        values["moving_variance"] + np.float32(bn.epsilon)))).astype(np.float32)


def weight_ops(data):
    """``[(layer name, op name, codes, scales, axis)]`` of every int8 weight, in op order."""
    model = fb.read_model(data)
    layers = {(w.subgraph, w.tensor): w.layer for w in read_int8_metadata(model)["weights"]}
    found = []
    for s, op in int8_weight_ops(model):
        tensor = model.subgraphs[s].tensors[int(op.inputs[1])]
        found.append((layers[(s, fb.tensor_name(tensor))], fb.op_name(model, op),
                      fb.constant_array(model, tensor).astype(np.float64),
                      np.asarray(tensor.quantization.scale, np.float64),
                      WEIGHT_OPS[fb.op_name(model, op)]))
    return found


def keras_kernel_tflite_layout(layer, shape, axis):
    kernel = np.asarray(layer.kernel.numpy(), np.float64)
    moved = np.moveaxis(kernel, -1, 0) if axis == 0 else kernel
    return moved.reshape(shape)


def per_channel(scales, ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return scales.reshape(shape)


def is_power_of_two(x):
    mantissa, _ = np.frexp(np.asarray(x, np.float64))
    return bool(np.all(mantissa == 0.5))


def output_step(data):
    """The quantization step of the int8 tensor the float output is dequantized from."""
    model = fb.read_model(data)
    subgraph = model.subgraphs[0]
    dequantize = subgraph.operators[fb.producers(subgraph)[int(subgraph.outputs[0])]]
    assert fb.op_name(model, dequantize) == "DEQUANTIZE"
    return float(subgraph.tensors[int(dequantize.inputs[0])].quantization.scale[0])


def predict(data, x):
    return lite.run_interpreter(lite.load_interpreter(data, num_threads=1), x)


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def exact_cnns(trained_cnn):
    """``{"batchnorm": model with BN after each conv, "folded": BN folded first}``."""
    with_bn = keras.models.clone_model(trained_cnn)
    with_bn.set_weights(trained_cnn.get_weights())
    return {"batchnorm": round_to_power_of_two_codes(with_bn),
            "folded": round_to_power_of_two_codes(lite.fold_batchnorm(trained_cnn))}


@pytest.fixture(scope="module")
def int8_exports(exact_cnns, digits):
    return {name: lite.export_tflite_bytes(model, mode="int8",
                                           representative_data=digits.x_train)
            for name, model in exact_cnns.items()}


# ------------------------------------------------------------ numpy helpers
def test_fit_power_of_two_gives_exact_codes_at_the_finest_power():
    fit = fit_power_of_two(np.array([0.75, -0.5, 0.0, 0.125], np.float32))
    assert fit.exact and fit.exponent == -3
    np.testing.assert_array_equal(fit.codes, [6, -4, 0, 1])
    assert finest_exponent(np.array([3.0 * 2 ** -20, 4.0])) == -20
    assert finest_exponent(np.zeros(3)) is None
    edge = fit_power_of_two(np.array([127 * 2.0 ** -7, -2.0 ** -7]))
    assert edge.exact and edge.codes.tolist() == [127, -1]


def test_fit_power_of_two_says_why_values_do_not_fit():
    fit = fit_power_of_two(np.array([1.0, 2.0 ** -8]))
    assert not fit.exact and fit.exponent == -8
    assert "codes up to 256" in fit.reason and "127" in fit.reason
    assert not fit_power_of_two(np.array([129 * 2.0 ** -7, 1.0])).exact
    assert "non-finite" in fit_power_of_two(np.array([np.nan, 1.0])).reason
    zeros = fit_power_of_two(np.zeros(4))
    assert zeros.exact and zeros.exponent is None and not np.any(zeros.codes)


def _widest_reference(values):
    """Slow and obvious: try every exponent from fine to coarse, take the first exact one."""
    for e in range(-80, 40):
        codes = np.asarray(values, np.float64) / 2.0 ** e
        if np.all(codes == np.round(codes)) and np.abs(codes).max() <= 127:
            return e, codes
    return None, None


def test_widest_codes_spread_exact_codes_over_the_int8_range_like_the_reference():
    rng = np.random.default_rng(7)
    for _ in range(300):
        step = 2.0 ** int(rng.integers(-20, 5))
        codes = rng.integers(-int(rng.integers(1, 128)), 128, size=int(rng.integers(1, 30)))
        codes[0] = codes[0] or 1
        values = codes * step
        fit = widest_codes(fit_power_of_two(values))
        e, expected = _widest_reference(values)
        assert fit.exact and fit.exponent == e
        np.testing.assert_array_equal(fit.codes, expected)
        assert 64 <= np.abs(fit.codes.astype(int)).max() <= 127  # doubling once more overflows
    assert widest_codes(fit_power_of_two(np.array([0.5, -0.25]))).codes.tolist() == [64, -32]
    not_exact = fit_power_of_two(np.array([1.0, 2.0 ** -8]))
    assert widest_codes(not_exact) is not_exact
    zeros = fit_power_of_two(np.zeros(3))
    assert widest_codes(zeros) is zeros


# --------------------------------------------------------------- exactness
def test_coarse_channels_get_wide_codes_so_biases_round_as_finely_as_ptq():
    # Channels holding only +-2^-2 and +-2^-1 (codes +-1, +-2 at the coarsest exact scale):
    # their int32 biases would round at input_scale * 2^-2, ~64x coarser than a max-abs scale.
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, name="dense")])
    rng = np.random.default_rng(3)
    kernel = rng.choice([-0.5, -0.25, 0.25, 0.5], size=(6, 4)).astype(np.float32)
    bias = rng.normal(0, 0.3, 4).astype(np.float32)
    model.get_layer("dense").set_weights([kernel, bias])
    x = rng.normal(0, 1, (64, 6)).astype(np.float32)
    data, result = lite.export_tflite_bytes(model, mode="int8", representative_data=x)
    assert result.exact_channels == result.total_channels == 4
    [(_, _, codes, scales, axis)] = weight_ops(data)
    assert np.abs(codes).max(axis=1 - axis).min() >= 64 and np.abs(codes).max() <= 127
    assert np.array_equal(codes * per_channel(scales, codes.ndim, axis), kernel.T)
    tflite_model = fb.read_model(data)
    [(s, op)] = list(int8_weight_ops(tflite_model))
    tensors = tflite_model.subgraphs[s].tensors
    input_scale = float(tensors[int(op.inputs[0])].quantization.scale[0])
    # The bias step is input_scale * weight scale, at most 2x a max-abs scale's.
    max_abs_scale = np.abs(kernel).max(axis=0) / 127.0
    assert np.all(scales <= 2 * max_abs_scale)
    q = fb.constant_array(tflite_model, tensors[int(op.inputs[2])]).astype(np.float64)
    assert np.abs(q * input_scale * scales - bias).max() <= input_scale * max_abs_scale.max()


def test_every_kernel_is_exact_without_batchnorm(exact_cnns, int8_exports):
    model = exact_cnns["folded"]
    data, result = int8_exports["folded"]
    assert result.mode == "int8" and not result.inexact
    assert result.exact_channels == result.total_channels == 16 + 32 + 10
    ops = weight_ops(data)
    assert [(layer, op) for layer, op, *_ in ops] == [
        ("conv1", "CONV_2D"), ("conv2", "CONV_2D"), ("classifier", "FULLY_CONNECTED")]
    for layer_name, _, codes, scales, axis in ops:
        assert is_power_of_two(scales) and np.abs(codes).max() <= 127
        keras_w = keras_kernel_tflite_layout(model.get_layer(layer_name), codes.shape, axis)
        dequantized = codes * per_channel(scales, codes.ndim, axis)
        assert np.abs(dequantized - keras_w).max() == 0.0
        assert np.array_equal(dequantized.astype(np.float32), keras_w.astype(np.float32))


def test_every_kernel_is_exact_with_the_batchnorm_scale_in_the_channel_scales(
        exact_cnns, int8_exports):
    model = exact_cnns["batchnorm"]
    data, result = int8_exports["batchnorm"]
    assert not result.inexact and result.exact_channels == result.total_channels == 58
    by_layer = {w.layer: w for w in result.int8_weights}
    assert by_layer["conv1"].folded == "BatchNorm 'bn1'"
    assert by_layer["conv2"].folded == "BatchNorm 'bn2'" and by_layer["classifier"].folded == ""
    batchnorms = {"conv1": "bn1", "conv2": "bn2"}
    for layer_name, _, codes, scales, axis in weight_ops(data):
        bn = batchnorms.get(layer_name)
        s = batchnorm_scale(model.get_layer(bn)) if bn else np.ones(scales.size, np.float32)
        power = scales / s.astype(np.float64)  # the scale is 2^e * s exactly
        assert is_power_of_two(power)
        keras_w = keras_kernel_tflite_layout(model.get_layer(layer_name), codes.shape, axis)
        assert np.abs(codes * per_channel(power, codes.ndim, axis) - keras_w).max() == 0.0


def test_bias_is_requantized_at_input_scale_times_weight_scale(exact_cnns, int8_exports):
    data, result = int8_exports["folded"]
    model = fb.read_model(data)
    checked = 0
    for s, op in int8_weight_ops(model):
        tensors = model.subgraphs[s].tensors
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        weight, bias = tensors[int(op.inputs[1])], tensors[int(op.inputs[2])]
        input_scale = np.float64(tensors[int(op.inputs[0])].quantization.scale[0])
        expected = (input_scale * np.asarray(weight.quantization.scale, np.float64)).astype(
            np.float32)
        np.testing.assert_array_equal(np.asarray(bias.quantization.scale), expected)
        layer = exact_cnns["folded"].get_layer(next(
            w.layer for w in result.int8_weights if w.tensor == fb.tensor_name(weight)))
        q = fb.constant_array(model, bias).astype(np.float64)
        error = np.abs(q * expected - layer.bias.numpy().astype(np.float64))
        assert np.all(error <= expected / 2 + 1e-12)
        checked += 1
    assert checked == 3
    for w in result.int8_weights:
        assert w.bias_channels == w.channels and 0 <= w.bias_exact <= w.channels
        assert f"bias {w.bias_exact}/{w.bias_channels} exact" in str(result)


def test_a_channel_that_cannot_be_exact_is_listed_with_reason_and_error(exact_cnns, digits):
    model = keras.models.clone_model(exact_cnns["folded"])
    model.set_weights(exact_cnns["folded"].get_weights())
    kernel = model.get_layer("classifier").kernel
    w = kernel.numpy()
    w[0, 3] += 2.0 ** (finest_exponent(w[:, 3]) - 4)  # a value 16x finer than the channel's
    kernel.assign(w)
    data, result = lite.export_tflite_bytes(model, mode="int8",
                                            representative_data=digits.x_train[:50])
    assert result.calibration_samples == 50
    assert [(i.layer, i.channel) for i in result.inexact] == [("classifier", 3)]
    entry = result.inexact[0]
    assert "codes up to" in entry.reason and "127" in entry.reason
    assert result.exact_channels == result.total_channels - 1 == 57
    layer, _, codes, scales, axis = weight_ops(data)[-1]
    error = np.abs(codes[3] * scales[3] - w[:, 3].astype(np.float64)).max()
    assert entry.max_error == pytest.approx(error)
    assert 0 < error <= scales[3] / 2 * 1.001
    assert "classifier channel 3" in str(result) and "57/58" in str(result)
    assert read_int8_metadata(fb.read_model(data))["inexact"] == result.inexact
    report = lite.inspect(data)
    assert report.inexact == result.inexact and (report.exact_channels, report.total_channels) == (
        57, 58)
    assert "not exact: classifier channel 3" in str(report)


def test_inspect_shows_exact_channels_distinct_codes_and_bytes(int8_exports):
    data, result = int8_exports["batchnorm"]
    report = lite.inspect(data)
    assert report.format == "int8" and report.file_bytes == len(data) == result.bytes
    assert (report.exact_channels, report.total_channels) == (58, 58)
    assert report.int8_weights == result.int8_weights
    rows = {t.name: t for t in report.tensors}
    for w in result.int8_weights:
        row = rows[w.tensor]
        assert row.stored_as == "int8" and row.bytes == w.bytes == row.elements
        assert row.unique_values == w.distinct_codes
        assert f"{w.exact_channels}/{w.channels} channels exact" in row.reason
    text = str(report)
    assert "int8 weights: 58/58 channels exact" in text
    assert "conv2 (CONV_2D): 32/32 exact" in text
    assert report.to_dict()["exact_channels"] == 58


def layer_zoo():
    """Rescaling, Conv2D, DepthwiseConv2D (multiplier 2) + BN, SeparableConv2D + BN (some
    gamma < 0), Conv1D, Dense + BN, Dense; kernels rounded to power-of-two codes, BN statistics
    randomized."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = L.Rescaling(1 / 255.0)(inp)
    h = L.Conv2D(8, 3, padding="same", name="conv")(h)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(h)
    h = L.ReLU()(L.BatchNormalization(name="bn_depthwise")(h))
    h = L.SeparableConv2D(12, 3, padding="same", name="separable")(h)
    h = L.BatchNormalization(name="bn_separable")(h)
    h = L.Reshape((4, 3))(L.GlobalAveragePooling2D()(h))
    h = L.Flatten()(L.Conv1D(5, 2, name="conv1d")(h))
    h = L.BatchNormalization(name="bn_dense")(L.Dense(6, name="dense")(h))
    model = keras.Model(inp, L.Dense(3, activation="softmax", name="head")(h))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        for v in layer.weights:
            if short_name(v) in ("gamma", "moving_variance"):
                v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
                if short_name(v) == "gamma" and layer.name == "bn_separable":  # some gamma < 0
                    v.assign(v.numpy() * np.where(np.arange(v.shape[0]) % 3 == 0, -1, 1))
            elif short_name(v) in ("beta", "moving_mean", "bias"):
                v.assign((0.3 * rng.normal(size=v.shape)).astype("float32"))
            elif len(v.shape) >= 2:
                w = np.asarray(v.numpy(), np.float64)
                big = np.abs(w.reshape(-1, w.shape[-1])).max(axis=0)
                e = np.ceil(np.log2(big / 127.0))
                v.assign((np.round(w / 2.0 ** e) * 2.0 ** e).astype(np.float32))
    return model


def test_other_layer_types_and_folded_scales_are_exact():
    model = layer_zoo()
    x = np.random.default_rng(1).uniform(0, 255, (64, 16, 16, 3)).astype("float32")
    data, result = lite.export_tflite_bytes(model, mode="int8", representative_data=x)
    by_layer = {(w.layer, w.op): w for w in result.int8_weights}
    expected = {("conv", "CONV_2D"): (8, "input Rescaling 0.00392157"),
                ("depthwise", "DEPTHWISE_CONV_2D"): (16, "BatchNorm 'bn_depthwise'"),
                ("separable", "DEPTHWISE_CONV_2D"): (16, ""),
                ("separable", "CONV_2D"): (12, "BatchNorm 'bn_separable'"),
                ("conv1d", "CONV_2D"): (5, ""),
                ("dense", "FULLY_CONNECTED"): (6, "")}  # its BN went into the head's inputs
    for key, (channels, folded) in expected.items():
        w = by_layer[key]
        assert (w.exact_channels, w.channels, w.folded) == (channels, channels, folded), key
    # The head's weight holds bn_dense's scale per INPUT: no exact per-channel codes.
    assert [(i.layer, i.channel) for i in result.inexact] == [("", -1)]
    assert "no Keras weight matches it" in result.inexact[0].reason
    got = predict(data, x)
    reference = np.asarray(model(x, training=False))
    assert np.abs(got - reference).max() < 0.02
    assert np.mean(got.argmax(-1) == reference.argmax(-1)) >= 0.95


@pytest.mark.legacy
@pytest.mark.parametrize("small, large", [("small", "large"), ("In-A", "0b")])
def test_multi_input_model_calibrates_each_input_by_name(small, large):
    # Names the SavedModel changes into parameter names ("In_A", "arg_0b"): the calibration
    # and the TFLite file still take the inputs by their Keras names.
    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name=small), keras.Input((6,), name=large)
    h = L.Concatenate()([L.Dense(5, name="da")(a), L.Dense(3, name="db")(b)])
    model = round_to_power_of_two_codes(keras.Model([a, b], L.Dense(2, name="head")(h)))
    rng = np.random.default_rng(0)
    xa, xb = rng.uniform(0, 1, (60, 4)), rng.uniform(0, 100, (60, 6))
    batches = [[xa[i: i + 20], xb[i: i + 20]] for i in range(0, 60, 20)]
    data, result = lite.export_tflite_bytes(model, mode="int8", representative_data=batches)
    assert result.calibration_samples == 60 and not result.inexact
    assert result.exact_channels == result.total_channels == 10
    interpreter = lite.load_interpreter(data)
    got = lite.run_interpreter(interpreter, {small: xa.astype("float32"), large: xb.astype("float32")})
    reference = np.asarray(model([xa, xb]))
    assert np.abs(got - reference).max() <= 0.02 * np.abs(reference).max()
    with pytest.raises(ValueError, match="2 inputs"):
        lite.export_tflite_bytes(model, mode="int8", representative_data=xa)


def per_tensor(data):
    """``data`` with every int8 weight quantized per tensor (one max-abs scale), as converters
    for runtimes without per-channel FULLY_CONNECTED write it; biases re-quantized to match."""
    model = fb.read_model(data)
    for s, op in list(int8_weight_ops(model)):
        tensors = model.subgraphs[s].tensors
        weight, bias = tensors[int(op.inputs[1])], tensors[int(op.inputs[2])]
        values = dequantized_weight(model, model.subgraphs[s], op)
        scale = np.float32(np.abs(values).max() / 127)
        weight.buffer = fb.add_buffer(model, np.round(values / scale).astype(np.int8).tobytes())
        weight.quantization.scale = np.array([scale], np.float32)
        weight.quantization.zeroPoint = np.zeros(1, np.int64)
        weight.quantization.quantizedDimension = 0
        old = fb.constant_array(model, bias) * np.asarray(bias.quantization.scale, np.float64)
        bias_scale = np.float32(np.float64(tensors[int(op.inputs[0])].quantization.scale[0])
                                * np.float64(scale))
        bias.buffer = fb.add_buffer(model, np.round(old / bias_scale).astype("<i4").tobytes())
        bias.quantization.scale = np.array([bias_scale], np.float32)
        bias.quantization.zeroPoint = np.zeros(1, np.int64)
    return fb.write_model(model)


def test_per_tensor_weights_get_one_power_of_two_scale_or_say_why_not():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), L.Dense(4, name="dense")])
    rng = np.random.default_rng(0)
    kernel = np.clip(np.round(rng.normal(size=(8, 4)) * 40), -127, 127) / 128  # codes * 2^-7
    model.get_layer("dense").set_weights([kernel.astype("float32"),
                                          rng.normal(size=4).astype("float32")])
    x = rng.normal(size=(50, 8)).astype("float32")
    data = per_tensor(convert_int8(model, calibration_samples(model, x)))
    rewritten, weights, inexact = rewrite_exact(data, model, "test")
    assert not inexact and (weights[0].exact_channels, weights[0].channels) == (4, 4)
    assert weights[0].per_channel is False
    (_, _, codes, scales, _), = weight_ops(rewritten)
    assert scales.size == 1 and is_power_of_two(scales)
    assert np.abs(codes * scales[0] - kernel.T).max() == 0.0
    got = predict(rewritten, x)
    assert np.abs(got - np.asarray(model(x))).max() < 0.05 * np.abs(got).max()
    finer = kernel.copy()
    finer[0, 0] += 2.0 ** -12  # one value 32x finer than the rest: no 8-bit power-of-two scale
    model.get_layer("dense").kernel.assign(finer.astype("float32"))
    _, weights, inexact = rewrite_exact(data, model, "test")
    assert weights[0].exact_channels == 0 and [(i.layer, i.channel) for i in inexact] == [
        ("dense", -1)]
    assert "codes up to" in inexact[0].reason and inexact[0].max_error > 0


# ------------------------------------------------------------- running it
def test_int8_file_runs_on_litert_close_to_the_keras_model(exact_cnns, int8_exports, digits):
    for name, model in exact_cnns.items():
        expected = np.asarray(model(digits.x_test, training=False))
        got = predict(int8_exports[name][0], digits.x_test)
        keras_acc = np.mean(expected.argmax(-1) == digits.y_test)
        int8_acc = np.mean(got.argmax(-1) == digits.y_test)
        assert abs(int8_acc - keras_acc) <= 0.02, name
        assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.95, name
        assert np.abs(got - expected).max() < 0.1, name


def test_wrapped_fixed_model_exports_with_its_palette(trained_cnn, digits, tmp_path):
    fixed = tfmot_wfn.fix_weights(lite.fold_batchnorm(trained_cnn))
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    result = lite.export_tflite(fixed, tmp_path / "fixed_int8.tflite", mode="int8",
                                representative_data=digits.x_train)
    assert os.path.getsize(tmp_path / "fixed_int8.tflite") == result.bytes
    assert result.total_channels == 58 and result.calibration_samples == 200
    assert result.exact_channels + len(result.inexact) == result.total_channels
    assert result.palette_size == tfmot_wfn.palette(fixed).size
    plain = tfmot_wfn.strip_fixing(fixed)
    expected = np.asarray(plain(digits.x_test, training=False)).argmax(-1)
    got = predict(str(tmp_path / "fixed_int8.tflite"), digits.x_test).argmax(-1)
    assert abs(np.mean(got == digits.y_test) - np.mean(expected == digits.y_test)) <= 0.02


def test_integer_input_and_output_types(exact_cnns, digits):
    data, result = lite.export_tflite_bytes(
        exact_cnns["folded"], mode="int8", representative_data=digits.x_train[:64],
        inference_input_type="int8", inference_output_type="uint8")
    assert result.inference_input_type == "int8" and "int8 input" in str(result)
    interpreter = lite.load_interpreter(data)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.uint8
    scale, zero = inp["quantization"]
    x = np.clip(np.round(digits.x_test / scale + zero), -128, 127).astype(np.int8)
    got = lite.run_interpreter(interpreter, x)
    out_scale, out_zero = out["quantization"]
    probabilities = (got.astype(np.float64) - out_zero) * out_scale
    expected = np.asarray(exact_cnns["folded"](digits.x_test, training=False))
    assert np.mean(probabilities.argmax(-1) == expected.argmax(-1)) >= 0.95


@pytest.mark.skipif(not os.environ.get("TFLITE_RUNTIME_PYTHON"),
                    reason="set TFLITE_RUNTIME_PYTHON to a python with tflite-runtime 2.14")
def test_int8_files_run_on_tflite_runtime_214(int8_exports, digits, tmp_path):
    """Same outputs as LiteRT (within one output step: the runtimes round differently)."""
    np.save(tmp_path / "inputs.npy", digits.x_test)
    steps = []
    for name, (data, _) in int8_exports.items():
        (tmp_path / f"{name}.tflite").write_bytes(data)
        np.save(tmp_path / f"{name}.expected.npy", predict(data, digits.x_test))
        steps.append(output_step(data))
    model = fb.read_model(int8_exports["batchnorm"][0])
    fc = [op for _, op in int8_weight_ops(model) if fb.op_name(model, op) == "FULLY_CONNECTED"]
    assert len(model.subgraphs[0].tensors[int(fc[0].inputs[1])].quantization.scale) == 10
    run = subprocess.run(
        [os.environ["TFLITE_RUNTIME_PYTHON"],
         os.path.join(ROOT, "tools", "check_tflite_runtime.py"), str(tmp_path),
         "--atol", str(1.01 * max(steps))], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed, 0 failed" in run.stdout


# ------------------------------------------------------------------ refusals
def test_missing_representative_data_is_refused_with_a_clear_error(exact_cnns, tmp_path):
    with pytest.raises(ValueError, match="mode='int8' needs representative_data"):
        lite.export_tflite(exact_cnns["folded"], tmp_path / "x.tflite", mode="int8")
    assert not (tmp_path / "x.tflite").exists()
    with pytest.raises(ValueError, match="holds no samples"):
        lite.export_tflite_bytes(exact_cnns["folded"], mode="int8", representative_data=[])
    with pytest.raises(ValueError, match=r"shape \(8, 8\).*expects \(8, 8, 1\)"):
        lite.export_tflite_bytes(exact_cnns["folded"], mode="int8",
                                 representative_data=np.zeros((4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="inference_input_type"):
        lite.export_tflite_bytes(exact_cnns["folded"], mode="int8",
                                 representative_data=np.zeros((4, 8, 8, 1), np.float32),
                                 inference_input_type="int16")
    assert "x_train[:200]" in MISSING_DATA
    with pytest.raises(ValueError, match="options of mode='int8', not of mode='palette'"):
        lite.export_tflite_bytes(exact_cnns["folded"], representative_data=np.zeros((4, 8, 8, 1)))


def test_calibration_reads_batches_and_pairs_only_as_far_as_needed(exact_cnns):
    model = exact_cnns["folded"]
    read = []

    def batches():
        for i in range(100):
            read.append(i)
            yield np.full((32, 8, 8, 1), i, np.float32), np.zeros(32)

    samples = calibration_samples(model, batches())
    assert len(samples) == DEFAULT_CALIBRATION_SAMPLES == 200
    assert read == list(range(7))  # 7 batches of 32 hold the first 200 samples
    assert samples[0][0].shape == (1, 8, 8, 1) and samples[-1][0][0, 0, 0, 0] == 6
    assert len(calibration_samples(model, np.ones((10, 8, 8, 1)), samples=4)) == 4


# ----------------------------------------------------------------------- CLI
def test_cli_exports_int8_from_an_npy_or_npz_file(exact_cnns, digits, tmp_path, capsys):
    from tfmot_wfn.apps import cli

    model_path = tmp_path / "exact.keras"
    exact_cnns["folded"].save(model_path)
    np.save(tmp_path / "calibration.npy", digits.x_train[:100])
    assert cli.main(["export", str(model_path), "--format", "int8",
                     "--representative-data", str(tmp_path / "calibration.npy")]) == 0
    written = tmp_path / "exact_int8.tflite"
    assert "58/58 output channels exact" in capsys.readouterr().out
    report = lite.inspect(written)
    assert report.format == "int8" and report.exact_channels == 58
    np.savez(tmp_path / "calibration.npz", x_train=digits.x_train[:20], y_train=digits.y_train[:20])
    assert cli.main(["export", str(model_path), "--format", "int8", "--quiet", "--output",
                     str(tmp_path / "u8.tflite"), "--inference-type", "uint8",
                     "--representative-data", str(tmp_path / "calibration.npz")]) == 0
    details = lite.load_interpreter(str(tmp_path / "u8.tflite")).get_input_details()[0]
    assert details["dtype"] == np.uint8


def test_cli_int8_without_calibration_data_says_what_to_pass(exact_cnns, tmp_path, capsys):
    from tfmot_wfn.apps import cli

    model_path = tmp_path / "exact.keras"
    exact_cnns["folded"].save(model_path)
    assert cli.main(["export", str(model_path), "--format", "int8"]) == 1
    assert "--representative-data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", str(model_path), "--dataset", "mnist"])
    assert "--format int8 only" in capsys.readouterr().err
