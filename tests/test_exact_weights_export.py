"""``export_tflite(mode="int8_weight_only" | "float16")`` and `tfmot_wfn.tflite.exact_weights`: the
weights that int8 codes with per-channel scales (or float16) hold exactly are stored so behind a
DEQUANTIZE, the rest stays float32 with the reason, and the file computes what the float file
computes."""

from __future__ import annotations

import json
import math
import re
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmot_wfn.keras.compat import keras, short_name
import tfmot_wfn
from tfmot_wfn import lite
from tfmot_wfn.export.conversion import convert_to_tflite
from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.exact_weights import (
    DEQUANTIZE_FLOAT16_VERSION, DEQUANTIZE_INT8_PER_CHANNEL_VERSION, DEQUANTIZE_INT8_VERSION,
    INT8_REASON, INT8_WEIGHT_AXES, METADATA_NAME, encode_exact_weights, float16_exact, int8_codes,
    read_weights_metadata,
)

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini
L = keras.layers


def _exact_by_struct(v: float) -> bool:
    """Reference: IEEE half precision through Python's struct ('e'), which refuses overflow."""
    if math.isnan(v):
        return False
    try:
        return struct.unpack("<e", struct.pack("<e", v))[0] == v
    except OverflowError:
        return False


@settings(deadline=None, max_examples=300)
@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=40))
def test_float16_exact_matches_the_struct_round_trip(values):
    v = np.array(values, np.float32)
    assert float16_exact(v).tolist() == [_exact_by_struct(float(x)) for x in v]


def _int8_reference(row: np.ndarray) -> bool:
    """Slow reference: some float32 scale among |v| / k (k = 1..127, and the float32 numbers
    next to each) gives integer codes of at most 127 whose products are the values."""
    nonzero = [abs(float(v)) for v in row if v != 0]
    if not nonzero:
        return True
    largest = np.float32(max(nonzero))
    for k in range(1, 128):
        q = np.float32(largest / np.float32(k))
        for scale in (q, np.nextafter(q, np.float32(np.inf)), np.nextafter(q, np.float32(0))):
            codes = [round(float(v) / float(scale)) for v in row]
            if max(abs(c) for c in codes) <= 127 and all(
                    np.float32(np.float32(c) * scale) == np.float32(v) for c, v in zip(codes, row)):
                return True
    return False


@settings(deadline=None, max_examples=150)
@given(channels=st.lists(st.tuples(
    st.lists(st.integers(-127, 127), min_size=3, max_size=3),
    st.floats(2.0**-20, 10.0, width=32), st.booleans()), min_size=1, max_size=4))
def test_int8_codes_finds_exact_codes_and_agrees_with_the_reference(channels):
    """Channels made as code * scale (float32) are found exact; channels nudged by one
    float32 step may or may not be, as the slow reference says; what is returned is exact."""
    rows = []
    for codes, scale, nudge in channels:
        row = (np.asarray(codes, np.float32) * np.float32(scale)).astype(np.float32)
        if nudge:
            row[0] = np.nextafter(row[0], np.float32(np.inf))
        rows.append(row)
    values = np.stack(rows).T.copy()  # channels on axis 1 (a TFLite depthwise layout's last axis)
    found = int8_codes(values, 1)
    assert (found is not None) == all(_int8_reference(r) for r in rows)
    if found is not None:
        codes, scales = found
        assert codes.dtype == np.int8 and scales.dtype == np.float32 and codes.shape == values.shape
        assert np.array_equal((codes.astype(np.float32) * scales[None, :]).astype(np.float32),
                              values)
    if not any(nudge for _, _, nudge in channels):
        assert found is not None


def test_float16_exact_on_wfn_values():
    # Sums of two signed powers of two within float16's exponents are exact; 1/3 is not.
    wfn = np.array([0.0, 2**-7, -(2**-3 + 2**-9), 0.75, 2**-14 + 2**-24], np.float32)
    assert float16_exact(wfn).all()
    assert not float16_exact(np.array([1 / 3, 2**-30, 1e5], np.float32)).any()


@pytest.fixture(scope="module")
def float16_exports(stripped_cnn, tmp_path_factory):
    folder = tmp_path_factory.mktemp("float16")
    half = lite.export_tflite(stripped_cnn, folder / "m_float16.tflite", mode="float16")
    dense = lite.export_tflite(stripped_cnn, folder / "m_dense.tflite", mode="dense")
    return folder, half, dense


def _kernels(model):
    return [v.numpy() for layer in model.layers for v in layer.weights if short_name(v) == "kernel"]


def test_every_kernel_is_stored_as_float16_holding_its_keras_values(stripped_cnn, float16_exports):
    folder, half, dense = float16_exports
    model = fb.read_model((folder / "m_float16.tflite").read_bytes())
    stored = {}
    for t in half.stored_weights:
        tensors = model.subgraphs[t.subgraph].tensors
        op = next(op for op in model.subgraphs[t.subgraph].operators
                  if list(op.outputs) == [t.index])
        source = tensors[int(op.inputs[0])]
        assert fb.type_name(source.type) == "FLOAT16"
        stored[t.name] = fb.constant_array(model, source).astype(np.float32)
    kernels = _kernels(stripped_cnn)
    for k in kernels:  # each Keras kernel is one of the float16 tensors, value for value
        matches = [v for v in stored.values() if v.size == k.size
                   and np.array_equal(np.sort(v.ravel()), np.sort(k.ravel()))]
        assert matches, f"kernel of shape {k.shape} not stored as float16"
    assert sum(t.elements for t in half.stored_weights) >= sum(k.size for k in kernels)
    shown = [t for t in lite.inspect(folder / "m_float16.tflite").tensors
             if t.stored_as == "float16"]
    assert sorted((t.elements, t.bytes) for t in shown) == sorted(
        (t.elements, 2 * t.elements) for t in half.stored_weights)
    # The MULs and scales of the kept BatchNorms, and the graph, weigh more in a model this
    # small (on the ResNet-20 of the benchmarks the file is 0.52x the float one).
    assert half.bytes < 0.66 * dense.bytes
    assert half.mode == "float16" and half.indexed == [] and half.batchnorm_scales
    scales = {k.scale for k in half.batchnorm_scales}
    kept = {t.name: t.reason for t in half.non_palette}
    assert scales <= set(kept)  # the BatchNorm scales: read by a MUL, kept float32
    assert all("read by MUL: kept float32" in kept[name] for name in scales)


def test_dequantize_sits_before_the_first_reader_at_the_float16_version(float16_exports):
    folder, half, _ = float16_exports
    model = fb.read_model((folder / "m_float16.tflite").read_bytes())
    subgraph = model.subgraphs[0]
    dequantize = [(p, op) for p, op in enumerate(subgraph.operators)
                  if fb.op_name(model, op) == "DEQUANTIZE"]
    assert len(dequantize) == len(half.stored_weights) > 0
    for p, op in dequantize:
        assert model.operatorCodes[op.opcodeIndex].version == DEQUANTIZE_FLOAT16_VERSION
        out = int(op.outputs[0])
        assert not fb.is_constant(model, subgraph.tensors[out])
        readers = [q for q, other in enumerate(subgraph.operators) if out in list(other.inputs)]
        assert readers and min(readers) > p


def test_the_float16_file_computes_what_the_float_file_and_keras_compute(
        stripped_cnn, float16_exports, digits):
    folder, _, _ = float16_exports
    x = digits.x_test[:64]
    half = lite.run_interpreter(lite.load_interpreter(folder / "m_float16.tflite",
                                                      decode=False), x)
    dense = lite.run_interpreter(lite.load_interpreter(folder / "m_dense.tflite"), x)
    expected = stripped_cnn.predict(x, verbose=0)
    # The BatchNorm scale is a MUL after the conv instead of folded into it: float rounding only.
    np.testing.assert_allclose(half, expected, atol=2e-5)
    np.testing.assert_allclose(half, dense, atol=2e-5)
    assert np.array_equal(half.argmax(1), expected.argmax(1))


def test_inexact_constants_and_their_op_partners_stay_float32_with_the_reason():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu", name="exact"),
                              L.Dense(4, name="rounded")])
    kernel, _ = model.get_layer("exact").get_weights()
    # "exact": float16 kernel beside a float32 bias (fine for XNNPACK); "rounded": the reverse.
    model.get_layer("exact").set_weights([np.round(kernel * 64) / 64, np.full(16, 0.1)])
    model.get_layer("rounded").set_weights([np.full((16, 4), 1 / 3, np.float32),
                                            np.full(4, 0.5, np.float32)])
    data, stored, kept = encode_exact_weights(convert_to_tflite(model), int8=False,
                                              producer="test 1.0")
    assert [t.elements for t in stored] == [128]  # the exact layer's kernel
    reasons = {t.shape: t.reason for t in kept}
    assert reasons[(16,)].startswith("16 of 16 values not exact in float16 (largest rounding")
    assert reasons[(4, 16)].startswith("64 of 64 values not exact in float16 (largest rounding")
    # 0.5 is exact, but a float16 bias beside a float32 kernel would slow the op down.
    assert reasons[(4,)].startswith("kept float32 beside the float32 weights") \
        and "FULLY_CONNECTED" in reasons[(4,)]
    info = lite.inspect(data)
    assert info.format == "float16" and info.producer == "test 1.0"
    shown = {t.shape: t.reason for t in info.tensors}
    assert shown[(4, 16)] == reasons[(4, 16)] and shown[(4,)] == reasons[(4,)]
    assert sum(t.stored_as == "float16" for t in info.tensors) == 1
    assert "how each constant is stored:" in str(info)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    out = lite.run_interpreter(lite.load_interpreter(data, decode=False), x)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


def test_a_float16_file_is_not_encoded_twice_and_damaged_metadata_is_named():
    model = keras.Sequential([keras.Input((4,)), L.Dense(8)])
    model.set_weights([np.full((4, 8), 0.5, np.float32), np.zeros(8, np.float32)])
    data, stored, _ = encode_exact_weights(convert_to_tflite(model), int8=False)
    assert stored
    with pytest.raises(ValueError, match="already holds float16 or int8"):
        encode_exact_weights(data)
    flat = fb.read_model(data)
    recorded = read_weights_metadata(flat)
    assert recorded["form"] == "float16" and len(recorded["reasons"]) == len(stored)
    raw = json.loads(zlib.decompress(bytes(fb.get_metadata(flat, METADATA_NAME))))
    assert raw["form"] == "float16"
    fb.set_metadata(flat, METADATA_NAME, b"not zlib")
    with pytest.raises(ValueError, match="damaged tfmot_wfn_weights metadata"):
        lite.inspect(fb.write_model(flat))


def test_unknown_mode_names_the_modes(stripped_cnn, tmp_path):
    with pytest.raises(ValueError, match="int8_weight_only"):
        lite.export_tflite(stripped_cnn, tmp_path / "x.tflite", mode="half")


def test_wrapped_model_exports_as_float16(trained_cnn, digits, tmp_path):
    fixed = tfmot_wfn.fix_weights(trained_cnn)
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.03)
    result = lite.export_tflite(fixed, tmp_path / "w.tflite", mode="float16")
    stripped = tfmot_wfn.strip_fixing(fixed)
    assert sum(t.elements for t in result.stored_weights) >= sum(
        k.size for k in _kernels(stripped))
    x = digits.x_test[:16]
    out = lite.run_interpreter(lite.load_interpreter(tmp_path / "w.tflite"), x)
    np.testing.assert_allclose(out, stripped.predict(x, verbose=0), atol=2e-5)


# ---------------------------------------------------------------- int8 weight-only
@pytest.fixture(scope="module")
def int8_weight_exports(trained_cnn, tmp_path_factory):
    """The demo CNN (BatchNorm in place) fixed in one stage with ``int8_exact=True``: every
    kernel channel is int8 codes times a power of two, and the converter's folded BatchNorm
    scale makes it codes times ``2^e * s``."""
    fixed = tfmot_wfn.fix_weights(trained_cnn, int8_exact=True)
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.015)
    final = tfmot_wfn.strip_fixing(fixed)
    folder = tmp_path_factory.mktemp("int8_weight_only")
    weights = lite.export_tflite(final, folder / "m.tflite", mode="int8_weight_only")
    dense = lite.export_tflite(final, folder / "m_dense.tflite", mode="dense")
    return folder, weights, dense


def _restored_weights(model, subgraph):
    """``{n: float32 weight of the n-th weight op}`` of a file, a DEQUANTIZE'd weight restored as
    the interpreter does (codes times per-channel scales, or float16 widened), with the
    quantization fields checked; the weight ops in file order."""
    made_by = fb.producers(subgraph)
    out, position = {}, 0
    for op in subgraph.operators:
        name = fb.op_name(model, op)
        if name == "DEQUANTIZE":
            continue
        if name in INT8_WEIGHT_AXES:
            index = int(op.inputs[1])
            tensor = subgraph.tensors[index]
            if index in made_by:
                deq = subgraph.operators[made_by[index]]
                assert fb.op_name(model, deq) == "DEQUANTIZE"
                source = subgraph.tensors[int(deq.inputs[0])]
                version = model.operatorCodes[deq.opcodeIndex].version
                values = fb.constant_array(model, source).astype(np.float32)
                if fb.type_name(source.type) == "INT8":
                    q = source.quantization
                    axis = int(q.quantizedDimension)
                    assert axis == INT8_WEIGHT_AXES[name]
                    assert len(q.scale) == values.shape[axis] and not np.any(q.zeroPoint)
                    assert version == (DEQUANTIZE_INT8_PER_CHANNEL_VERSION if len(q.scale) > 1
                                       else DEQUANTIZE_INT8_VERSION)
                    shape = [1] * values.ndim
                    shape[axis] = -1
                    values = (values * np.asarray(q.scale, np.float32).reshape(shape)
                              ).astype(np.float32)
                else:
                    assert version == DEQUANTIZE_FLOAT16_VERSION
                out[position] = values
            else:
                out[position] = fb.constant_array(model, tensor)
            position += 1  # counts weight ops only: a compact file has fewer other ops
    return out


def test_int8_weight_only_holds_the_float_files_weights_and_gives_its_outputs(
        int8_weight_exports, digits):
    folder, weights, dense = int8_weight_exports
    assert weights.batchnorm == "fold" and not weights.batchnorm_scales  # folded into the scales
    model = fb.read_model((folder / "m.tflite").read_bytes())
    plain = fb.read_model((folder / "m_dense.tflite").read_bytes())
    restored = _restored_weights(model, model.subgraphs[0])
    original = _restored_weights(plain, plain.subgraphs[0])
    assert restored.keys() == original.keys() and len(restored) == 3
    for position, values in original.items():  # every weight, BatchNorm scale included
        assert np.array_equal(restored[position], values)
    int8 = [t for t in weights.stored_weights if t.dtype == "int8"]
    assert sum(t.elements for t in int8) == sum(w.size for w in original.values())
    x = digits.x_test[:64]
    got = lite.run_interpreter(lite.load_interpreter(folder / "m.tflite", decode=False), x)
    want = lite.run_interpreter(lite.load_interpreter(folder / "m_dense.tflite"), x)
    assert np.array_equal(got, want)
    assert weights.bytes < 0.45 * dense.bytes


def test_inspect_names_the_int8_weight_only_file(int8_weight_exports):
    folder, weights, _ = int8_weight_exports
    info = lite.inspect(folder / "m.tflite")
    assert info.format == "int8_weight_only" and info.producer.startswith("tfmot_wfn ")
    int8 = [t for t in info.tensors if t.stored_as == "int8"]
    assert sorted(t.elements for t in int8) == sorted(
        t.elements for t in weights.stored_weights if t.dtype == "int8")
    assert all(t.reason == INT8_REASON and t.bytes == t.elements for t in int8)
    count = sum(t.elements for t in int8)
    assert f"{count:,} as int8 in {count:,} bytes" in str(info)
    assert "how each constant is stored:" in str(info)


def test_depthwise_and_single_channel_weights_get_their_axis_and_version():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(h)
    h = L.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, L.Dense(1)(h))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:  # int8 codes times a power of two per channel, -0.0 among them
            kernel, bias = layer.get_weights()
            kernel = (rng.integers(-127, 128, kernel.shape) * 2.0**-7).astype(np.float32)
            kernel.flat[0] = -0.0
            layer.set_weights([kernel, np.full(bias.shape, 0.5, np.float32)])
    dense = convert_to_tflite(model)
    data, stored, kept = encode_exact_weights(dense)
    assert [t.dtype for t in stored] == ["int8"] * 3
    flat, plain = fb.read_model(data), fb.read_model(dense)
    restored = _restored_weights(flat, flat.subgraphs[0])  # checks axes 0/3/0 and versions 5/5/2
    for position, values in _restored_weights(plain, plain.subgraphs[0]).items():
        assert np.array_equal(restored[position], values)  # -0.0 == 0.0: value for value
    x = rng.normal(size=(3, 6, 6, 2)).astype(np.float32)
    got = lite.run_interpreter(lite.load_interpreter(data, decode=False), x)
    np.testing.assert_array_equal(got, lite.run_interpreter(lite.load_interpreter(dense), x))


def test_a_channel_that_int8_cannot_hold_falls_back_to_float16_or_float32():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), L.Dense(4, activation="relu", name="wide"),
                              L.Dense(3, name="plain")])
    wide = np.full((8, 4), 2.0**-8, np.float32)
    wide[0, 0] = 1.0  # needs codes up to 256: not int8, but float16 holds both values
    model.get_layer("wide").set_weights([wide, np.zeros(4, np.float32)])
    model.get_layer("plain").set_weights([np.full((4, 3), 0.375, np.float32),
                                          np.full(3, 0.5, np.float32)])
    data, stored, kept = encode_exact_weights(convert_to_tflite(model))
    kinds = {t.shape: t.dtype for t in stored}
    assert kinds[(4, 8)] == "float16" and kinds[(3, 4)] == "int8"
    # The int8 layer's exact bias stays float32 (XNNPACK takes float16 biases only beside
    # float16 weights).
    assert any(t.shape == (3,) and "beside the int8 weights" in t.reason for t in kept)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    out = lite.run_interpreter(lite.load_interpreter(data, decode=False), x)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


def _tensor_names(path) -> set:
    model = fb.read_model(open(path, "rb").read())
    return {fb.tensor_name(t) for _, _, t in fb.iter_tensors(model) if fb.tensor_name(t)}


@pytest.mark.parametrize("mode", ["int8_weight_only", "float16"])
def test_a_compact_weight_file_names_weights_after_keras_and_computes_the_same(
        stripped_cnn, digits, tmp_path, mode):
    compact = lite.export_tflite(stripped_cnn, tmp_path / "compact.tflite", mode=mode)
    full = lite.export_tflite(stripped_cnn, tmp_path / "full.tflite", mode=mode, compact=False)
    assert compact.compact and not full.compact
    # The converter's names (e.g. "sequential_1/conv1/convolution;...") are the bulk of the
    # bytes saved; every data byte stays.
    assert full.bytes - compact.bytes > 500  # Keras 3: ~1.8 KB; tf_keras names are shorter
    assert sorted((t.dtype, t.elements, t.bytes) for t in compact.stored_weights) == sorted(
        (t.dtype, t.elements, t.bytes) for t in full.stored_weights)
    names = _tensor_names(tmp_path / "compact.tflite")
    layers = {layer.name for layer in stripped_cnn.layers}
    for t in compact.stored_weights:  # named after the Keras weight they hold, in the file
        assert t.name in names and t.name.split("/")[0] in layers
        assert t.name.split("/")[1] in ("kernel", "bias"), t.name
    for t in compact.non_palette:  # unnamed tensors are shown as t<index>
        assert t.name in names or t.name == f"t{t.index}"
    for k in compact.batchnorm_scales:  # the kept BatchNorms name tensors the file has
        assert {k.scale, k.weight} <= names and k.scale == f"{k.batchnorm}/scale"
    assert max(len(n) for n in names) < max(len(n) for n in _tensor_names(tmp_path / "full.tflite"))
    info = lite.inspect(tmp_path / "compact.tflite")
    full_info = lite.inspect(tmp_path / "full.tflite")
    assert info.format == mode
    assert sorted(t.reason.split(" beside")[0] for t in info.tensors if t.stored_as != "int32") \
        == sorted(t.reason.split(" beside")[0] for t in full_info.tensors if t.stored_as != "int32")
    for t in info.tensors:  # a weight a reason names is one the file has
        for quoted in re.findall(r"weights '([^']+)'", t.reason):
            assert quoted in names, t.reason
    for batch in (1, 5):  # the dynamic-batch reshape rewrite holds for every batch size
        x = digits.x_test[:batch]
        got = lite.run_interpreter(lite.load_interpreter(tmp_path / "compact.tflite",
                                                         decode=False), x)
        want = lite.run_interpreter(lite.load_interpreter(tmp_path / "full.tflite",
                                                          decode=False), x)
        assert np.array_equal(got, want)


def test_a_kept_bias_names_its_weight_as_the_compact_file_does_when_labels_collide():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), L.Dense(4, activation="relu", name="first"),
                              L.Dense(3, name="second")])
    for layer in model.layers:  # int8 codes times a power of two; exact float16 biases
        kernel, bias = layer.get_weights()
        layer.set_weights([np.full(kernel.shape, 0.375, np.float32),
                           np.full(bias.shape, 0.5, np.float32)])
    data, stored, kept = encode_exact_weights(convert_to_tflite(model), compact=True,
                                              label=lambda t: "w")  # every label the same
    flat = fb.read_model(data)
    subgraph = flat.subgraphs[0]
    made_by = fb.producers(subgraph)
    biases = [t for t in kept if "beside the int8 weights" in t.reason]
    assert len(biases) == 2 and len({t.name for t in stored}) == 2  # "w", "w#2", ...
    for t in biases:
        op = next(op for op in subgraph.operators if fb.op_name(flat, op) == "FULLY_CONNECTED"
                  and int(op.inputs[2]) == t.index)
        deq = subgraph.operators[made_by[int(op.inputs[1])]]
        written = fb.tensor_name(subgraph.tensors[int(deq.inputs[0])])
        assert f"beside the int8 weights {written!r} of its FULLY_CONNECTED" in t.reason


def test_two_weights_on_one_buffer_are_stored_and_counted_once():
    # The converter gives equal kernels one tensor; a hand-made file may point two tensors at
    # one buffer. Both become one int8 buffer, its bytes counted once (as `inspect` counts).
    x = keras.Input((8,))
    first, second = keras.layers.Dense(8, name="a"), keras.layers.Dense(8, name="b")
    model = keras.Model(x, second(keras.layers.ReLU()(first(x))))
    kernel = ((np.arange(64).reshape(8, 8) % 7) - 3).astype("float32") * 0.25
    for layer in (first, second):
        layer.set_weights([kernel, np.full(8, 0.5, "float32")])
    parsed = fb.read_model(convert_to_tflite(model))
    subgraph = parsed.subgraphs[0]
    readers = [op for op in subgraph.operators if len(op.inputs) > 1]
    shared = int(readers[0].inputs[1])  # the second reads it too, or an equal copy
    twin = fb.add_tensor(subgraph, "twin", fb.tensor_shape(subgraph.tensors[shared]),
                         subgraph.tensors[shared].type, subgraph.tensors[shared].buffer)
    readers[1].inputs = np.asarray([readers[1].inputs[0], twin, readers[1].inputs[2]], np.int32)
    data, stored, _ = encode_exact_weights(fb.write_model(parsed), int8=True)
    assert len(stored) == 2 and {w.dtype for w in stored} == {"int8"}
    assert sorted(w.bytes for w in stored) == [0, 64]
    written = fb.read_model(data)
    int8_buffers = {t.buffer for _, _, t in fb.iter_tensors(written)
                    if t.type == fb.type_value("INT8") and fb.is_constant(written, t)}
    assert len(int8_buffers) == 1
    x_test = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    np.testing.assert_allclose(lite.run_interpreter(lite.load_interpreter(data), x_test),
                               np.asarray(model(x_test)), rtol=1e-5, atol=1e-5)
