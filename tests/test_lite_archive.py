"""The entropy-coded archive (tfmot_wfn.archive.wfn_archive): bit-exact round trip, size, bad files."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("constriction")

from tfmot_wfn.keras.compat import keras, variable_path  # noqa: E402

import tfmot_wfn  # noqa: E402
from tfmot_wfn.core import entropy_bits  # noqa: E402
from tfmot_wfn.apps.demo import build_cnn  # noqa: E402
from tfmot_wfn.archive import wfn_archive as A  # noqa: E402
from tfmot_wfn.archive import wfn_decoding as D  # noqa: E402
from tfmot_wfn.archive import wfn_format as F  # noqa: E402
from tfmot_wfn.archive.wfn_format import ArchiveError  # noqa: E402

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini


# ------------------------------------------------------------------ helpers
def bits_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == np.float32:
        return np.array_equal(a.view(np.uint32), b.view(np.uint32))
    return a.tobytes() == b.tobytes()


def assert_same_weights(model_a, model_b):
    assert len(model_a.weights) == len(model_b.weights)
    for va, vb in zip(model_a.weights, model_b.weights):
        assert variable_path(va) == variable_path(vb)
        assert bits_equal(va.numpy(), vb.numpy()), variable_path(va)


def same_contents(a: A.ArchiveContents, b: A.ArchiveContents) -> bool:
    return (a.config == b.config and bits_equal(a.palette, b.palette) and a.names == b.names
            and all(bits_equal(x, y) for x, y in zip(a.arrays, b.arrays)))


def reseal(data: bytes) -> bytes:
    """Fix the body length and the SHA-256 of a (mutated) archive, so the parser is reached."""
    data = bytes(data)
    if len(data) < F.PROLOGUE.size + 32:
        return data
    body_len = len(data) - F.PROLOGUE.size - 32
    head = data[:12] + struct.pack("<Q", body_len)
    out = head + data[F.PROLOGUE.size:-32]
    return out + hashlib.sha256(out).digest()


def seal(body: bytes, version: int = A.FORMAT_VERSION, flags: int = 0) -> bytes:
    out = F.PROLOGUE.pack(A.MAGIC, version, flags, len(body)) + body
    return out + hashlib.sha256(out).digest()


def varints(values) -> bytes:
    """Unsigned LEB128 (7 bits a byte, low bits first, high bit set on all but the last)."""
    out = bytearray()
    for v in values:
        v = int(v)
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def build_body(palette=(0.0, 0.5), coding=1, tensors=(), models=b"", words=(), digest=None,
               config='{"class_name": "X"}', n_tensors=None):
    """A version-1 body written field by field (independent of the writer)."""
    cfg = config.encode()
    z = zlib.compress(cfg)
    pal = np.asarray(palette, np.float32)
    body = struct.pack("<II", len(cfg), len(z)) + z
    body += struct.pack("<I", pal.size) + pal.astype("<f4").tobytes()
    body += struct.pack("<B", coding)
    body += struct.pack("<I", len(tensors) if n_tensors is None else n_tensors)
    for name, code, kind, shape, raw in tensors:
        body += struct.pack("<H", len(name)) + name.encode()
        body += struct.pack("<BBB", code, kind, len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
        body += raw
    words = np.asarray(words, "<u4")
    body += models + struct.pack("<Q", words.size) + words.tobytes()
    body += digest if digest is not None else b"\0" * 32
    return body


def decode_error(data, match=None, **kw) -> str:
    with pytest.raises(ArchiveError, match=match) as info:
        A.decode_archive(data, **kw)
    return str(info.value)


def fixed_model(model, fraction=1.0, distance=0.05):
    fixed = tfmot_wfn.fix_weights(model)
    tfmot_wfn.run_fixing_stage(fixed, fraction, distance)
    return fixed


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits_x():
    import keras_helpers

    return keras_helpers.load_digits_data().x_test


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The demo CNN with float BatchNorm statistics, fully fixed in one stage, stripped."""
    keras.utils.set_random_seed(1)
    model = build_cnn(keras)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    fixed = fixed_model(model)
    final = tfmot_wfn.strip_fixing(fixed)
    path = tmp_path_factory.mktemp("archive") / "small.wfn"
    stats = A.save_archive(final, path)
    return {"fixed": fixed, "final": final, "path": path, "stats": stats, "data": path.read_bytes()}


@pytest.fixture(scope="module")
def small_contents(small):
    return A.read_archive(small["path"])


@pytest.fixture(scope="module")
def mlp_50k():
    keras.utils.set_random_seed(2)
    inp = keras.Input((64,))
    h = keras.layers.Dense(512, name="hidden1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Dense(32, name="hidden2")(h)
    out = keras.layers.Dense(10, name="out")(h)
    return tfmot_wfn.strip_fixing(fixed_model(keras.Model(inp, out)))


# ------------------------------------------------------------- round trips
def test_round_trip_is_bit_exact_and_predicts_the_same(small, digits_x):
    loaded = A.load_archive(small["path"])
    assert_same_weights(small["final"], loaded)
    assert json.loads(loaded.to_json()) == json.loads(small["final"].to_json())
    expected = small["final"](digits_x, training=False).numpy()
    assert np.array_equal(loaded(digits_x, training=False).numpy(), expected)


def test_read_archive_gives_palette_indices_and_raw_statistics(small, small_contents):
    c = small_contents
    assert c.palette.dtype == np.float32 and np.all(np.diff(c.palette) > 0)
    np.testing.assert_array_equal(c.palette, tfmot_wfn.palette(small["fixed"]))
    assert c.names == [variable_path(v) for v in small["final"].weights]
    for t, v in zip(c.tensors, small["final"].weights):
        assert bits_equal(t.array, v.numpy())
        moving = "moving_" in t.name
        assert t.indexed == (not moving), t.name  # float BN statistics stay raw
        if t.indexed:
            assert t.indices.dtype == np.uint8 and t.indices.shape == t.array.shape
            assert bits_equal(c.palette[t.indices], t.array)
    assert json.loads(c.config)["class_name"] == "Functional"
    assert c.format_version == 1 and c.coding in ("global", "per_tensor")


def test_a_fix_weights_model_is_stripped_and_archived(small, tmp_path):
    path = tmp_path / "wrapped.wfn"
    A.save_archive(small["fixed"], path)
    assert_same_weights(small["final"], A.load_archive(path))


def test_partly_fixed_model_keeps_its_free_weights_raw(tmp_path):
    keras.utils.set_random_seed(3)
    fixed = fixed_model(build_cnn(keras), fraction=0.5)
    path = tmp_path / "half.wfn"
    A.save_archive(fixed, path)
    contents = A.read_archive(path)
    np.testing.assert_array_equal(contents.palette, tfmot_wfn.palette(fixed))
    kernels = [t for t in contents.tensors if t.name.endswith("kernel")]
    assert any(not t.indexed for t in kernels)  # half fixed: free values stay raw
    assert_same_weights(tfmot_wfn.strip_fixing(fixed), A.load_archive(path))


@pytest.mark.parametrize("coding", ["auto", "global", "per_tensor"])
def test_every_coding_round_trips_odd_tensors(coding):
    pal = ODD_PALETTE  # unsorted on purpose
    weights = odd_weights()
    data = A.encode_archive('{"class_name": "X"}', weights, pal, coding=coding)
    c = A.decode_archive(data)
    assert coding == "auto" or c.coding == coding
    assert c.names == [n for n, _ in weights]
    for (_, a), t in zip(weights, c.tensors):
        assert bits_equal(np.asarray(a), t.array), t.name
    assert [t.indexed for t in c.tensors] == [True, False, True, False, True, True, False, False,
                                              False, True]
    assert np.signbit(c.tensors[2].array).tolist() == [True, False, False, True]
    # -0.0 is stored as its own palette entry next to +0.0, sorted in IEEE total order.
    assert np.signbit(c.palette).sum() == 3 and c.palette.size == pal.size + 1


def test_auto_coding_keeps_the_smaller_file():
    rng = np.random.default_rng(1)
    pal = np.linspace(-1, 1, 9).astype(np.float32)
    # Tensors with very different histograms: per-tensor models pay off.
    skewed = [(f"t{i}", rng.choice(pal[i:i + 2], 5000).astype(np.float32)) for i in range(4)]
    # Many small tensors with one histogram: one global model pays off.
    alike = [(f"t{i}", rng.choice(pal, 50).astype(np.float32)) for i in range(40)]
    for weights, winner in ((skewed, "per_tensor"), (alike, "global")):
        sizes = {c: len(A.encode_archive("{}", weights, pal, c)) for c in ("global", "per_tensor")}
        auto = A.decode_archive(A.encode_archive("{}", weights, pal))
        assert auto.coding == winner == min(sizes, key=sizes.get)


def test_archive_of_50k_weights_reaches_the_entropy_bound(mlp_50k, tmp_path):
    report = A.archive_size_report(mlp_50k)
    n, h = report["indexed_weights"], report["entropy_bits_per_weight"]
    assert n >= 50_000 and 0 < h < 8
    contents = A.decode_archive(A.encode_archive(
        mlp_50k.to_json(), [(variable_path(v), v.numpy()) for v in mlp_50k.weights], tfmot_wfn.palette(mlp_50k)))
    indexed = np.concatenate([t.array.ravel() for t in contents.tensors if t.indexed])
    assert indexed.size == n
    assert h == pytest.approx(entropy_bits(indexed), abs=1e-12)
    assert report["archive_bytes"] <= report["bound_bytes"]
    assert report["within_bound"]
    # The coded indices alone are within 1% of N H / 8 (the rest is headers).
    assert report["stream_bytes"] <= 1.01 * n * h / 8 + 16
    stats = A.save_archive(mlp_50k, tmp_path / "mlp.wfn")
    assert (tmp_path / "mlp.wfn").stat().st_size == stats["archive_bytes"] == report["archive_bytes"]
    assert_same_weights(mlp_50k, A.load_archive(tmp_path / "mlp.wfn"))


def test_demo_model_size_report_is_within_bound(small):
    s = small["stats"]
    assert s["within_bound"] and s["archive_bytes"] == len(small["data"])
    assert s["raw_tensors"] == 4 and s["raw_bytes"] == 4 * (16 + 16 + 32 + 32)


def test_the_old_size_keys_still_read_with_a_warning(small):
    s = small["stats"]
    with pytest.warns(DeprecationWarning, match="'indexed_weights'"):
        assert s["N"] == s["indexed_weights"] > 0
    with pytest.warns(DeprecationWarning, match="'entropy_bits_per_weight'"):
        assert s["H"] == s["entropy_bits_per_weight"] > 0
    with pytest.raises(KeyError):
        s["no such key"]


def test_the_format_needs_neither_keras_nor_tensorflow(tmp_path):
    """encode/decode/read_archive are numpy + constriction (the package __init__ is bypassed)."""
    script = f"""
import sys, types, numpy as np
root = {A.__file__!r}.rsplit("/tfmot_wfn/", 1)[0]
sys.path.insert(0, root)
pkg = types.ModuleType("tfmot_wfn.lite"); pkg.__path__ = [root + "/tfmot_wfn/lite"]
sys.modules["tfmot_wfn.lite"] = pkg
from tfmot_wfn.archive import wfn_decoding as D, wfn_encoding as E
data = E.encode_archive("{{}}", [("w", np.array([0.5, 0.0, 0.5], np.float32))], [0.0, 0.5])
open({str(tmp_path / "x.wfn")!r}, "wb").write(data)
assert D.read_archive({str(tmp_path / "x.wfn")!r}).tensors[0].indexed
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TF imported"
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------ bad files
def test_truncated_files_are_refused(small):
    data = small["data"]
    for cut in sorted({0, 1, 7, 8, 12, 19, 20, 21, len(data) // 2, len(data) - 33,
                       len(data) - 32, len(data) - 1}):
        msg = decode_error(data[:cut])
        assert "runcated" in msg or "only" in msg, (cut, msg)


def test_every_single_byte_flip_is_refused(small):
    data = small["data"]
    for pos in range(len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[pos] ^= mask
            with pytest.raises(ArchiveError):
                A.decode_archive(bytes(bad))


def test_wrong_magic_version_and_flags_are_named(small, tmp_path):
    data = small["data"]
    assert "magic" in decode_error(b"NOTWFN!!" + data[8:])
    assert "zip" in decode_error(b"PK\x03\x04" + data[4:])
    newer = bytearray(data)
    newer[8:10] = struct.pack("<H", 2)
    assert "version 2" in decode_error(reseal(newer)) and "upgrade" in decode_error(reseal(newer))
    flagged = bytearray(data)
    flagged[10:12] = b"\x01\x00"
    assert "flags" in decode_error(reseal(flagged))
    assert "unexpected bytes after" in decode_error(data + b"\0")
    (tmp_path / "x.keras").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ArchiveError, match="zip"):
        A.load_archive(tmp_path / "x.keras")
    with pytest.raises(ValueError):  # ArchiveError is a ValueError
        A.read_archive(tmp_path / "x.keras")


def test_forged_but_well_sealed_files_are_refused():
    f32, idx, raw = 1, 1, 0

    def bad(match, **kw):
        max_elements = kw.pop("max_elements", A.DEFAULT_MAX_ELEMENTS)
        decode_error(seal(build_body(**kw)), match=match, max_elements=max_elements)

    t4 = [("w", f32, idx, (4,), b"")]
    bad("palette size", palette=np.zeros(A.MAX_PALETTE + 1))
    bad("strictly increasing", palette=(0.5, 0.0), tensors=t4, models=varints([2, 2]))
    bad("NaN or Inf", palette=(0.0, np.nan), tensors=t4, models=varints([2, 2]))
    bad("unknown index coding", coding=7)
    bad("unknown dtype", tensors=[("w", 99, raw, (1,), b"\0")], coding=0)
    bad("unknown kind", tensors=[("w", f32, 5, (1,), b"\0" * 4)], coding=0)
    bad("not float32", tensors=[("w", 9, idx, (4,), b"")], models=varints([2, 2]))
    bad("dimensions", tensors=[("w", f32, raw, (1,) * 40, b"")], coding=0)
    bad("cannot fit", n_tensors=1 << 30, coding=0)
    # A raw tensor longer than the file, an absurd element count, a coded stream
    # declaring more words than the file holds.
    bad("raw tensor", tensors=[("w", f32, raw, (1000,), b"\0" * 8)], coding=0)
    bad("absurd size", tensors=[("w", f32, idx, (1 << 40, 1 << 20), b"")])
    bad("absurd size", tensors=[("w", f32, raw, (100,), b"\0" * 400)], coding=0, max_elements=10)
    bad("coded stream declares", tensors=t4, models=varints([2, 2])[:-1] + b"\x02\xff\xff\xff")
    # Histograms that disagree with the tensors, or name indices beyond the palette.
    bad("counts 5 weights", tensors=t4, models=varints([3, 2]))
    bad("longer than 9 bytes", tensors=t4, models=b"\xff" * 12 + b"\x01\x01")
    bad("absurd count", tensors=t4, models=varints([1 << 62, 2]))
    three_symbol_model = varints([1, 1, 2])  # written for a 3-entry palette, read with K=2
    decode_error(seal(build_body(tensors=t4, models=three_symbol_model)))
    # A tiny file declaring a billion well-spread weights: the stream is too short.
    big = [("w", f32, idx, (1 << 27,), b"")]
    bad("needs at least", tensors=big, models=varints([1 << 26, 1 << 26]), words=[1, 2])
    # One used palette entry codes nothing; a huge count is then capped by max_elements.
    bad("absurd size", tensors=[("w", f32, idx, (1 << 29,), b"")], models=varints([1 << 29, 0]))
    # Decoded indices must reproduce their histogram and the content digest.
    bad("histogram|more data|digest", tensors=t4, models=varints([2, 2]), words=[0x12345, 0x6789])
    bad("zero word", tensors=t4, models=varints([2, 2]), words=[5, 0])
    bad("digest", tensors=[("w", f32, idx, (4,), b"")], models=varints([4, 0]))
    bad("no palette-indexed", coding=1)
    bad("is palette-indexed but", tensors=t4, coding=0)
    bad("unexpected bytes at the end", config="{}", tensors=[], coding=0,
        digest=b"\0" * 40)
    bad("not valid UTF-8 JSON", config="{not json", coding=0)
    bad("not a JSON object", config="[1]", coding=0)


def test_varint_reader_is_bounded_and_exact():
    values = [0, 1, 127, 128, 300, 2**32, 2**62]
    data = memoryview(varints(values) + b"\x05")
    r = D._Reader(data, 0, len(data))
    assert r.varints(len(values), "v").tolist() == values and r.pos == len(data) - 1
    with pytest.raises(ArchiveError, match="needs 3 varints"):
        D._Reader(memoryview(b"\x01\xff\xff"), 0, 3).varints(3, "v")
    with pytest.raises(ArchiveError, match="longer than 9"):
        D._Reader(memoryview(b"\xff" * 9 + b"\x01"), 0, 10).varints(1, "v")


def test_content_digest_catches_a_coder_that_decodes_differently(small, monkeypatch):
    data = small["data"]
    original = D.categorical_model

    def skewed(counts):  # a "future constriction" quantising differently
        c = counts.astype(np.float64)
        c[0] *= 3
        return original(c)

    monkeypatch.setattr(D, "categorical_model", skewed)
    with pytest.raises(ArchiveError, match="histogram|digest|stream"):
        A.decode_archive(data)


def test_load_refuses_an_architecture_that_does_not_fit_the_weights(small, tmp_path):
    c = A.read_archive(small["path"])
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    data = A.encode_archive(other.to_json(), list(zip(c.names, c.arrays)), c.palette)
    (tmp_path / "mismatch.wfn").write_bytes(data)
    with pytest.raises(ArchiveError, match="holds 12 weights"):
        A.load_archive(tmp_path / "mismatch.wfn")


# --------------------------------------------------------------------- fuzzing
_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
)


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, pos, value in mutations:
        pos = pos % (len(out) + 1)
        if kind == "flip" and pos < len(out):
            out[pos] ^= value
        elif kind == "set" and pos < len(out):
            out[pos] = value
        elif kind == "truncate":
            del out[pos:]
        elif kind == "insert":
            out.insert(pos, value)
        elif kind == "delete" and pos < len(out):
            del out[pos]
    return bytes(out)


ODD_PALETTE = np.array([1.0, -0.5, 0.0, 0.125, 0.25, -0.25], np.float32)


def odd_weights(seed=0):
    """Tensors covering every path: indexed, raw float, -0.0, ints, empty, constant, NaN, f16, bool."""
    rng = np.random.default_rng(seed)
    return [
        ("a/kernel", rng.choice(ODD_PALETTE, (40, 30)).astype(np.float32)),
        ("b/moving_mean", rng.normal(size=7).astype(np.float32)),
        ("c/signed_zero", np.array([-0.0, 0.0, 0.25, -0.0], np.float32)),
        ("d/counter", np.arange(5, dtype=np.int64)),
        ("e/empty", np.zeros((0, 3), np.float32)),
        ("f/constant", np.full((3, 3), 0.125, np.float32)),
        ("g/nan", np.array([np.nan, 0.5, np.inf], np.float32)),
        ("h/half", rng.normal(size=4).astype(np.float16)),
        ("i/flag", np.array([True, False])),
        ("j/scalar", np.float32(0.25)),
    ]


@pytest.fixture(scope="module")
def fuzz_bases(small, small_contents):
    """(bytes, contents, tail start) of the demo CNN archive and of a per-tensor-coded odd archive."""
    odd = A.encode_archive('{"class_name": "X"}', odd_weights(), ODD_PALETTE, coding="per_tensor")
    tail = len(small["data"]) - 32 - small["stats"]["stream_bytes"] - 600
    return [(small["data"], small_contents, tail), (odd, A.decode_archive(odd), 20)]


def _check_outcome(expected, data):
    try:
        decoded = A.decode_archive(data)
    except ArchiveError as e:
        assert not str(e).startswith(D._UNEXPECTED), e  # every defect has its own check
        return
    assert same_contents(decoded, expected)  # only a no-op change may decode


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_mutation, min_size=1, max_size=4), base=st.sampled_from([0, 1]))
def test_fuzz_mutated_files_are_refused_or_identical(fuzz_bases, mutations, base):
    data, expected, _ = fuzz_bases[base]
    _check_outcome(expected, _mutate(data, mutations))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_mutation, min_size=1, max_size=3), tail=st.booleans(),
       base=st.sampled_from([0, 1]))
def test_fuzz_resealed_files_reach_the_parser_and_are_refused(fuzz_bases, mutations, tail, base):
    """The length and checksum are recomputed after mutating, so the parser's own checks run."""
    data, expected, start = fuzz_bases[base]
    if tail:  # aim past the config: tensor table, histograms, stream and digest
        mutations = [(k, start + p % (len(data) - start), v) for k, p, v in mutations]
    _check_outcome(expected, reseal(_mutate(data, mutations)))


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.sampled_from([1_000, 20_000]), k=st.integers(2, 300), share=st.floats(0.0005, 0.2),
       where=st.sampled_from(["start", "middle", "end"]), signed=st.booleans(), seed=st.integers(0, 99))
def test_clustered_tensors_with_long_runs_round_trip(n, k, share, where, signed, seed):
    # A long run of the smallest palette value used (a tensor's zeros when no value is
    # negative) costs almost nothing at the end of the coded stream: such files are
    # smaller than the histogram's entropy, and the reader must still accept them.
    rng = np.random.default_rng(seed)
    palette = np.arange(-k if signed else 0, k + 1, dtype=np.float32) / 64
    w = np.zeros(n, np.float32)
    nnz = max(1, int(share * n))
    start = {"start": 0, "middle": n // 2 - nnz // 2, "end": n - nnz}[where]
    w[start:start + nnz] = rng.choice(palette[palette != 0], nnz)
    decoded = A.decode_archive(A.encode_archive("{}", [("k", w)], palette))
    assert decoded.tensors[0].array.tobytes() == w.tobytes()
