"""freeze_batchnorm: BatchNorm in scale-and-shift form, so a fixed model stores palette values only."""

from __future__ import annotations

import numpy as np
import pytest

import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.keras.compat import keras, short_name
from tfmot_wfn.keras.network import run_fixing_stage

L = keras.layers


def conv_bn_model(seed=0):
    """Conv -> BN -> ReLU -> nested (Dense -> BN) classifier, BN with trained-looking statistics."""
    keras.utils.set_random_seed(seed)
    inner = keras.Sequential([keras.Input((8,)), L.Dense(16, name="inner_dense"),
                              L.BatchNormalization(name="inner_bn")], name="inner")
    x_in = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(4, 3, name="conv")(x_in)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(2, 3, strides=2, name="conv2")(x)
    x = L.Flatten()(x)
    x = inner(x)
    out = L.Dense(3, name="head")(x)
    model = keras.Model(x_in, out, name="conv_bn")
    rng = np.random.default_rng(seed)
    for layer in (model.get_layer("bn"), inner.get_layer("inner_bn")):
        n = layer.weights[0].shape[0]
        layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.3, n),
                           rng.normal(0, 0.5, n), rng.uniform(0.1, 3.0, n)])
    return model


def batchnorms(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, L.BatchNormalization)]


def test_frozen_model_computes_the_same_and_the_input_is_unchanged():
    model = conv_bn_model()
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(1).normal(size=(16, 8, 8, 1)).astype("float32")
    frozen = tfmot_wfn.freeze_batchnorm(model)
    np.testing.assert_allclose(frozen.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(batchnorms(frozen)) == 2
    assert all(bn is not orig for bn, orig in zip(batchnorms(frozen), batchnorms(model)))
    for bn, orig in zip(batchnorms(frozen), batchnorms(model)):
        w = {short_name(v): v.numpy() for v in bn.weights}
        o = {short_name(v): v.numpy().astype(np.float64) for v in orig.weights}
        scale = o["gamma"] / np.sqrt(o["moving_variance"] + orig.epsilon)
        np.testing.assert_allclose(w["gamma"], scale, rtol=1e-6)
        np.testing.assert_allclose(w["beta"], o["beta"] - o["moving_mean"] * scale, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(w["moving_mean"], 0.0)
        np.testing.assert_array_equal(w["moving_variance"], 1.0)
        assert bn.epsilon == 0.0 and not bn.trainable


def test_frozen_statistics_never_move_and_the_fixed_model_stores_palette_values_only():
    model = tfmot_wfn.freeze_batchnorm(conv_bn_model(seed=2))
    x = np.random.default_rng(2).normal(size=(64, 8, 8, 1)).astype("float32")
    y = np.random.default_rng(3).integers(0, 3, 64)
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=tfmot_wfn.StagedFixing(
        (0.5, 1.0), steps_per_stage=2))
    fixed.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fixed.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    final = tfmot_wfn.strip_fixing(fixed)
    palette = set(tfmot_wfn.palette(final).tolist())
    stored = set(np.unique(np.concatenate([np.ravel(v.numpy()) for v in final.weights])).tolist())
    assert stored <= palette | {0.0, 1.0}
    for bn in batchnorms(final):
        w = {short_name(v): v.numpy() for v in bn.weights}
        np.testing.assert_array_equal(w["moving_mean"], 0.0)
        np.testing.assert_array_equal(w["moving_variance"], 1.0)
    # Unfrozen, the same training moves the statistics (what freezing prevents).
    plain = tfmot_wfn.fix_weights(conv_bn_model(seed=2))
    plain.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    stats = np.concatenate([v.numpy().ravel() for bn in batchnorms(tfmot_wfn.strip_fixing(plain))
                            for v in bn.weights if "moving" in short_name(v)])
    assert np.unique(stats).size > 10


def test_frozen_and_fixed_model_exports_with_its_kernels_indexed():
    from tfmot_wfn import lite

    model = tfmot_wfn.freeze_batchnorm(conv_bn_model(seed=4))
    fixed = tfmot_wfn.fix_weights(model)
    run_fixing_stage(fixed, 1.0, 0.05)
    final = tfmot_wfn.strip_fixing(fixed)
    x = np.random.default_rng(4).normal(size=(8, 8, 8, 1)).astype("float32")
    data, result = lite.export_tflite_bytes(final)
    # Frozen BatchNorms fold into the conv like any BatchNorm; the conv kernels stay indexed.
    indexed = {t.name for t in result.indexed}
    assert {"conv/kernel", "conv2/kernel"} <= indexed
    interpreter = lite.make_interpreter(data)
    got = lite.run_interpreter(interpreter, x)
    np.testing.assert_allclose(got, final.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_freeze_batchnorm_refuses_what_it_cannot_freeze():
    with pytest.raises(TypeError, match="expects a Keras model"):
        tfmot_wfn.freeze_batchnorm(L.Dense(3))
    fixed = tfmot_wfn.fix_weights(kh.dense_model(batchnorm=True))
    with pytest.raises(ValueError, match="before fixing"):
        tfmot_wfn.freeze_batchnorm(fixed)


def test_batchnorm_affine_is_what_keras_computes_in_inference():
    """core.batchnorm_affine, the one scale/shift formula folding, freezing and export share."""
    import tensorflow as tf

    from tfmot_wfn.core.batchnorm_affine import batchnorm_scale_shift, float32_batchnorm_scale

    bn = conv_bn_model().get_layer("bn")
    gamma, beta, mean, var = (w.astype(np.float64) for w in bn.get_weights())
    scale, shift = batchnorm_scale_shift(gamma, beta, mean, var, bn.epsilon)
    assert scale.dtype == shift.dtype == np.float64
    np.testing.assert_array_equal(scale, gamma / np.sqrt(var + bn.epsilon))
    x = np.random.default_rng(1).normal(size=(5, 6, 6, 4)).astype("float32")
    np.testing.assert_allclose(x * scale + shift, np.asarray(bn(x, training=False)),
                               rtol=1e-5, atol=1e-5)
    g32, v32 = bn.get_weights()[0], bn.get_weights()[3]
    tf_scale = float32_batchnorm_scale(g32, v32, bn.epsilon)
    assert tf_scale.dtype == np.float32
    tf_rounded = (tf.constant(g32) * tf.math.rsqrt(tf.constant(v32) + np.float32(bn.epsilon))).numpy()
    np.testing.assert_array_max_ulp(tf_scale, tf_rounded, maxulp=1)  # as TensorFlow rounds it
    with np.errstate(all="raise"):  # zero variance and epsilon: inf, no warning
        assert np.isinf(float32_batchnorm_scale([1.0], [0.0], 0.0)).all()
