"""The same tfmot_wfn calls on the same tiny model, under whichever Keras is selected.

`tests/test_legacy_equivalence.py` runs `run()` in its own process and again in a
subprocess with the other setting of ``TF_USE_LEGACY_KERAS`` (Keras 3 <-> tf_keras)
and compares the results. ``python tests/legacy_equivalence.py OUT.npz`` writes them.

The float weights are set from numpy (not from either Keras's initializers), the
stages are run directly (`run_fixing_stage`, pure numpy on the weights), so palette,
masks and values must be identical; the stripped model's predictions and the
regulariser value agree to float32 rounding.
"""

from __future__ import annotations

import os
import sys

import numpy as np

#: delta; stage i of the paper's ten allows delta * max(1, 10 - i).
DISTANCE = 0.015


def _set_weights(model, seed: int, sparsity: float) -> None:
    """Deterministic float weights (numpy), layer by layer; kernels pruned to `sparsity`.

    Layer by layer: tf_keras lists a model's non-trainable weights last, Keras 3 in
    layer order, but each layer's own list is the same in both.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([_value(v, rng, sparsity) for v in layer.weights])


def _value(v, rng, sparsity: float) -> np.ndarray:
    name = str(v.name).split("/")[-1].split(":")[0]
    shape = tuple(int(d) for d in v.shape)
    if name in ("gamma", "moving_variance"):
        value = rng.uniform(0.5, 1.5, size=shape)
    elif name in ("beta", "moving_mean", "bias"):
        value = 0.1 * rng.normal(size=shape)
    else:
        value = rng.normal(scale=0.3, size=shape)
        if sparsity:
            value = np.where(rng.random(shape) < sparsity, 0.0, value)
    return value.astype(np.float32)


def build(keras, seed: int = 0, sparsity: float = 0.0):
    """A tiny Functional CNN: Conv2D (bias) - BatchNorm - ReLU - Flatten - Dense."""
    L = keras.layers
    inp = keras.Input((6, 6, 1), name="image")
    h = L.Conv2D(4, 3, name="conv")(inp)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU(name="relu")(h)
    h = L.Flatten(name="flatten")(h)
    out = L.Dense(3, name="head")(h)
    model = keras.Model(inp, out, name="tiny")
    _set_weights(model, seed, sparsity)
    return model


def run() -> dict:
    import tfmot_wfn
    from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, keras
    from tfmot_wfn.keras.network import wrappers_of

    x = np.random.default_rng(7).normal(size=(5, 6, 6, 1)).astype(np.float32)
    result = {"legacy": np.array(IS_LEGACY_KERAS)}
    for variant, sparsity in (("dense", 0.0), ("sparse", 0.5)):
        model = build(keras, seed=3, sparsity=sparsity)
        fixed = tfmot_wfn.fix_weights(model, distance=DISTANCE,
                                      preserve_sparsity=bool(sparsity))
        result[f"{variant}/fixed_at_start"] = np.array(tfmot_wfn.fixed_fraction(fixed))
        for i, fraction in enumerate(tfmot_wfn.PAPER_FRACTIONS):
            tfmot_wfn.run_fixing_stage(fixed, fraction, DISTANCE * max(1, 10 - i))
            wrappers = wrappers_of(fixed)
            result[f"{variant}/stage{i}/masks"] = np.concatenate(
                [m.ravel() for w in wrappers for m in w.mask_numpy()])
            result[f"{variant}/stage{i}/values"] = np.concatenate(
                [a.ravel() for w in wrappers for a in w.effective_numpy()])
            result[f"{variant}/stage{i}/palette"] = tfmot_wfn.palette(fixed)
            if i == 0:
                result[f"{variant}/regularizer_after_stage0"] = np.array(
                    float(tfmot_wfn.regularization_value(fixed)))
        stripped = tfmot_wfn.strip_fixing(fixed)
        result[f"{variant}/unique"] = np.array(tfmot_wfn.unique_weights(stripped))
        result[f"{variant}/entropy"] = np.array(tfmot_wfn.weight_entropy(stripped))
        result[f"{variant}/stripped_weights"] = np.concatenate(
            [w.ravel() for w in stripped.get_weights()])
        result[f"{variant}/predictions"] = np.asarray(stripped(x, training=False))
    return result


if __name__ == "__main__":
    out = run()
    np.savez(sys.argv[1] if len(sys.argv) > 1 else os.devnull, **out)
