"""Damaged files get a clear ValueError from our readers, never a stray exception or a silently
wrong result: palette TFLite files (graph indices out of range, operators without options, a
palette that is no longer sorted and finite, random bit flips), `.keras` files (a wrapper config
without its layer, a bad zip member) and non-TFLite bytes given to the interpreter."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import tfmot_wfn
from tfmot_wfn import lite
from tfmot_wfn.keras.compat import keras
from tfmot_wfn.tflite import flatbuffer as fb

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

L = keras.layers


@pytest.fixture(scope="module")
def palette_file(tmp_path_factory):
    """A fixed Conv2D + BatchNorm + Dense model, its palette TFLite bytes (with the kept BN
    scale MUL) and its outputs."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(4, 3, name="conv"),
                              L.BatchNormalization(name="bn"), L.Flatten(), L.Dense(3)])
    model.layers[1].set_weights([np.linspace(0.5, 2, 4), np.linspace(-1, 1, 4),
                                 np.linspace(-0.1, 0.1, 4), np.linspace(0.5, 2, 4)])
    fixed = tfmot_wfn.fix_weights(model)
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    data, result = lite.export_tflite_bytes(fixed)
    assert result.batchnorm_scales  # the file has a MUL to fold back
    x = np.random.default_rng(0).random((2, 6, 6, 1), dtype=np.float32)
    path = tmp_path_factory.mktemp("damaged") / "fixed.keras"
    fixed.save(str(path))
    return {"data": data, "x": x, "expected": lite.run_interpreter(lite.load_interpreter(data), x),
            "keras": str(path)}


def _edited(data, edit):
    model = fb.read_model(data)
    edit(model)
    return fb.write_model(model)


def _ops(model, name):
    return [op for op in model.subgraphs[0].operators if fb.op_name(model, op) == name]


DAMAGE = {
    "operator code out of range": lambda m: setattr(_ops(m, "GATHER")[0], "opcodeIndex", 99),
    "op reads a missing tensor": lambda m: _ops(m, "CAST")[0].inputs.__setitem__(0, 777),
    "op writes a missing tensor": lambda m: _ops(m, "GATHER")[0].outputs.__setitem__(0, 777),
    "GATHER without inputs": lambda m: setattr(_ops(m, "GATHER")[0], "inputs",
                                               np.zeros(0, np.int32)),
    "metadata in a missing buffer": lambda m: setattr(m.metadata[0], "buffer", 999),
    "tensor in a missing buffer": lambda m: setattr(m.subgraphs[0].tensors[0], "buffer", 999),
    "no subgraph": lambda m: setattr(m, "subgraphs", None),
    "palette not sorted": lambda m: _set_palette(m, lambda p: p[::-1]),
    "palette not finite": lambda m: _set_palette(m, lambda p: np.where(p == p.max(), np.inf, p)),
}


def _set_palette(model, change):
    from tfmot_wfn.tflite.palette_format import PALETTE_TENSOR_NAME

    (tensor,) = [t for t in model.subgraphs[0].tensors if fb.tensor_name(t) == PALETTE_TENSOR_NAME]
    values = change(fb.constant_array(model, tensor).astype(np.float32))
    model.buffers[tensor.buffer].data = np.frombuffer(values.astype("<f4").tobytes(), np.uint8)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_palette_file_is_refused_by_every_reader(palette_file, damage):
    data = _edited(palette_file["data"], DAMAGE[damage])
    for read in (lite.decode_palette, lite.inspect, lite.load_interpreter):
        with pytest.raises(ValueError, match="damaged"):
            read(data)


def test_random_bit_flips_give_a_clear_error_or_a_valid_file(palette_file):
    data = palette_file["data"]
    rng = np.random.default_rng(0)
    outcomes = {"refused": 0, "read": 0}
    for _ in range(300):
        flipped = bytearray(data)
        position = int(rng.integers(len(flipped)))
        flipped[position] ^= 1 << int(rng.integers(8))
        try:
            lite.decode_palette(bytes(flipped))
            lite.inspect(bytes(flipped))
            outcomes["read"] += 1
        except ValueError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and outcomes["read"] > 0, outcomes  # both kinds were met


def test_operators_without_options_are_decoded_or_left_as_they_are(palette_file):
    # A MUL without options runs in the stock interpreter: decoding leaves it unfolded.
    data = _edited(palette_file["data"], lambda m: setattr(_ops(m, "MUL")[0], "builtinOptions",
                                                           None))
    got = lite.run_interpreter(lite.load_interpreter(data), palette_file["x"])
    np.testing.assert_allclose(got, palette_file["expected"], rtol=1e-5, atol=1e-6)


def test_metadata_named_in_another_encoding_is_ignored(palette_file):
    def add_entry(model):
        entry = fb.schema().MetadataT()
        entry.name = b"\xff\xfe other tool"
        entry.buffer = fb.add_buffer(model, b"x")
        model.metadata.append(entry)

    data = _edited(palette_file["data"], add_entry)
    assert lite.inspect(data).format == lite.inspect(palette_file["data"]).format
    got = lite.run_interpreter(lite.load_interpreter(data), palette_file["x"])
    np.testing.assert_allclose(got, palette_file["expected"], rtol=1e-5, atol=1e-6)


def test_an_archive_given_to_the_tflite_inspector_says_what_to_use(palette_file, tmp_path):
    from tfmot_wfn.archive.wfn_format import MAGIC
    from tfmot_wfn.tflite.inspection import ARCHIVE_PREFIX

    assert MAGIC.startswith(ARCHIVE_PREFIX)
    with pytest.raises(ValueError, match="is a .wfn archive, not a TFLite file.*read_archive"):
        lite.inspect(MAGIC + b"\x00" * 64)


def test_bytes_that_are_not_tflite_are_refused_before_the_runtime(tmp_path):
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    for decode in (False, True):
        with pytest.raises(ValueError, match="not a TFLite"):
            lite.load_interpreter(str(empty), decode=decode)
    with pytest.raises(ValueError, match="not a TFLite file"):
        lite.load_interpreter(b"PK\x03\x04 a zip, not a model", decode=False)


def _rewrite_member(source, target, member, change):
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, change(data) if item.filename == member else data)


def test_damaged_keras_files_get_a_clear_error(palette_file, tmp_path):
    import json

    def drop_layer(data):
        config = json.loads(data)
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "WeightFixingWrapper":
                del layer["config"]["layer"]
        return json.dumps(config).encode()

    no_layer = str(tmp_path / "no_layer.keras")
    _rewrite_member(palette_file["keras"], no_layer, "config.json", drop_layer)
    with pytest.raises(ValueError, match="saved config has no 'layer' entry"):
        lite.load_keras_model(no_layer)
    # A flipped byte inside a stored member: the zip's CRC check fails.
    raw = bytearray(open(palette_file["keras"], "rb").read())
    with zipfile.ZipFile(palette_file["keras"]) as archive:
        info = archive.getinfo("model.weights.h5")
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    raw[at] ^= 0xFF
    bad_crc = tmp_path / "bad_crc.keras"
    bad_crc.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged .keras file"):
        lite.load_keras_model(str(bad_crc))


@pytest.mark.skipif(not tfmot_wfn.IS_LEGACY_KERAS, reason="tf_keras reading a Keras 3 file")
def test_a_keras_3_file_under_tf_keras_says_so(tmp_path):
    path = tmp_path / "keras3.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", '{"keras_version": "3.15.0"}')
        archive.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="saved by Keras 3.15.0; tf_keras"):
        lite.load_keras_model(str(path))
