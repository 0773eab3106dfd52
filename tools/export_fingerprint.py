"""Fingerprint what the exporters write, to check that a refactor keeps every byte.

Exports a fixed set of seeded, fully fixed models (the demo CNN with random
BatchNorm statistics in every `export_tflite` mode, a zero-gamma channel,
depthwise/separable/1-D layers, an int16 palette), encodes one converter file
directly, writes one ``.wfn`` archive and freezes/folds BatchNorm, then writes
the SHA-256 of every output (and of each `ExportResult`) as JSON:

    python tools/export_fingerprint.py before.json      # on the old code
    python tools/export_fingerprint.py after.json --compare before.json

The converter's bytes depend on the TensorFlow version: compare runs made with
the same environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tfmot_wfn  # noqa: E402
from tfmot_wfn import lite  # noqa: E402
from tfmot_wfn.apps.demo import build_cnn  # noqa: E402
from tfmot_wfn.export.conversion import convert_to_tflite  # noqa: E402
from tfmot_wfn.keras.batchnorm_folding import batchnorm_scale_shift  # noqa: E402
from tfmot_wfn.keras.compat import keras, short_name  # noqa: E402
from tfmot_wfn.tflite.palette_encoding import encode_palette  # noqa: E402

L = keras.layers
LAYER_MODELS = {
    "dw_sep_dense": lambda: keras.Sequential([
        keras.Input((8, 8, 3)),
        L.DepthwiseConv2D(3, depth_multiplier=2), L.BatchNormalization(), L.ReLU(6.0),
        L.SeparableConv2D(5, 3), L.BatchNormalization(), L.ReLU(),
        L.Conv2D(4, 1), L.BatchNormalization(),
        L.Flatten(), L.Dense(7, use_bias=False), L.BatchNormalization(), L.ReLU(), L.Dense(3)]),
    "conv1d_dw1d": lambda: keras.Sequential([
        keras.Input((16, 3)), L.Conv1D(8, 3), L.BatchNormalization(), L.ReLU(),
        L.DepthwiseConv1D(3), L.BatchNormalization(), L.GlobalAveragePooling1D(), L.Dense(4)]),
    "embed_ln": lambda: keras.Sequential([
        keras.Input((6,), dtype="int32"), L.Embedding(20, 8), L.LayerNormalization(), L.Flatten(),
        L.Dense(3)]),
}


def randomize_batchnorm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomize_batchnorm(layer, seed + 1)
        elif isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, size=v.shape).astype("float32")
                               if short_name(v) in ("gamma", "moving_variance")
                               else (0.3 * rng.normal(size=v.shape)).astype("float32")
                               for v in layer.weights])
    return model


def fixed_and_stripped(model):
    fixed = tfmot_wfn.fix_weights(model)
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    return tfmot_wfn.strip_fixing(fixed)


def sha(data: bytes) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()


def export_record(data: bytes, result) -> dict:
    summary = result.to_dict()
    summary.pop("path", None)
    return {"bytes": len(data), "sha256": sha(data),
            "result_sha256": sha(json.dumps(summary, sort_keys=True, default=str).encode())}


def weights_sha(model) -> str:
    return sha(b"".join(np.asarray(v.numpy()).tobytes() for v in model.weights))


def zero_gamma_copy(model, layer="bn1", channel=3):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    weights = copy.get_layer(layer).get_weights()
    weights[0] = weights[0].copy()
    weights[0][channel] = 0.0
    copy.get_layer(layer).set_weights(weights)
    return copy


def fingerprints() -> dict:
    out = {}
    keras.utils.set_random_seed(1)
    cnn = fixed_and_stripped(randomize_batchnorm(build_cnn(keras)))
    variants = {f"cnn-{bn}-compact={compact}": dict(batchnorm=bn, compact=compact)
                for bn in ("scale_op", "fold") for compact in (True, False)}
    variants.update({"cnn-dense": dict(mode="dense"), "cnn-int16": dict(index_dtype="int16")})
    for name, options in variants.items():
        out[name] = export_record(*lite.export_tflite_bytes(cnn, **options))
    zero = zero_gamma_copy(cnn)
    for compact in (True, False):
        out[f"zero-gamma-compact={compact}"] = export_record(
            *lite.export_tflite_bytes(zero, compact=compact))
    for kind, make in LAYER_MODELS.items():
        keras.utils.set_random_seed(11)
        model = fixed_and_stripped(randomize_batchnorm(make()))
        for compact in (True, False):
            out[f"{kind}-compact={compact}"] = export_record(
                *lite.export_tflite_bytes(model, compact=compact))
    keras.utils.set_random_seed(6)
    wide = keras.Sequential([keras.Input((20,)), L.Dense(30)])  # unfixed: int16 indices
    out["wide"] = export_record(*lite.export_tflite_bytes(wide))
    data, meta, _, _ = encode_palette(convert_to_tflite(cnn), tfmot_wfn.palette(cnn))
    out["encode_palette"] = {"bytes": len(data), "sha256": sha(data),
                             "metadata_sha256": sha(meta.to_bytes())}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cnn.wfn")
        sizes = lite.save_archive(cnn, path)
        with open(path, "rb") as f:
            data = f.read()
        renamed = {"N": "indexed_weights", "H": "entropy_bits_per_weight"}  # tfmot_wfn 0.1 keys
        out["archive"] = {"bytes": len(data), "sha256": sha(data),
                          "sizes": {renamed.get(k, k): v for k, v in sorted(dict(sizes).items())}}
    keras.utils.set_random_seed(3)
    raw = randomize_batchnorm(build_cnn(keras))
    out["freeze_batchnorm"] = {"sha256": weights_sha(tfmot_wfn.freeze_batchnorm(raw))}
    out["fold_batchnorm"] = {"sha256": weights_sha(lite.fold_batchnorm(raw))}
    scale, shift = batchnorm_scale_shift(raw.get_layer("bn1"))
    out["batchnorm_scale_shift"] = {"sha256": sha(scale.tobytes() + shift.tobytes())}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the JSON file to write")
    parser.add_argument("--compare", help="a JSON file of an earlier run: exit 1 on a difference")
    args = parser.parse_args(argv)
    out = fingerprints()
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True, default=str)
    print(f"wrote {args.output}: {len(out)} fingerprints")
    if args.compare:
        with open(args.compare) as f:
            old = json.load(f)
        old, new = json.loads(json.dumps(old)), json.loads(json.dumps(out, default=str))
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        for key in differ:
            print(f"DIFFERENT {key}:\n  before {old.get(key)}\n  after  {new.get(key)}")
        print("identical" if not differ else f"{len(differ)} of {len(new)} differ")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
