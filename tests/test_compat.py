"""The Keras 3 / tf_keras seam (`tfmot_wfn.keras.compat`) and the wrapper call on both.

Under Keras 3 the wrapper runs its layer in a ``StatelessScope``; under tf_keras it
substitutes the effective weights for the layer's weight attributes during the call
only. These tests hold for both (the module runs in the legacy job too).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.keras import compat
from tfmot_wfn.keras.compat import keras, tf
from tfmot_wfn.keras.network_fixing import run_fixing_stage, wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L = keras.layers
Variable = getattr(keras, "Variable", tf.Variable)  # tf_keras layers hold tf.Variables


def _half_fixed(batchnorm=True):
    fixed = tfmot_wfn.fix_weights(kh.dense_model(batchnorm=batchnorm, seed=4))
    run_fixing_stage(fixed, 0.5, 0.1)
    return fixed


def test_keras_flavour_follows_the_environment():
    legacy = os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")
    assert compat.IS_LEGACY_KERAS == tfmot_wfn.IS_LEGACY_KERAS == legacy
    assert keras.__name__ == ("tf_keras" if legacy else "keras")


def test_importing_tfmot_wfn_never_imports_tfmot():
    """tfmot sets TF_USE_LEGACY_KERAS=1 when imported: tfmot_wfn must not import it."""
    code = ("import os, sys, tfmot_wfn, tfmot_wfn.lite; tfmot_wfn.fix_weights; "
            "print('tensorflow_model_optimization' in sys.modules, "
            "os.environ.get('TF_USE_LEGACY_KERAS'))")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "None"]


def test_in_xla_compilation_tells_xla_graphs_apart():
    """The private TensorFlow API behind it is still there and still answers."""
    seen = {}

    def probe(name):
        def f(x):
            seen[name] = compat.in_xla_compilation()
            return x
        return f

    tf.function(probe("xla"), jit_compile=True)(tf.constant(1.0))
    tf.function(probe("graph"))(tf.constant(1.0))
    probe("eager")(tf.constant(1.0))
    assert seen == {"xla": True, "graph": False, "eager": False}


def test_call_uses_effective_weights_and_leaves_the_layer_untouched():
    fixed = _half_fixed()
    wrapper = wrappers_of(fixed)[0]
    dense = wrapper.layer
    before = [id(v) for v in dense.weights]
    kernel_before = dense.kernel
    # Move the fixed entries of the variable away: the call must not see it.
    mask = wrapper.mask_numpy()[0]
    dense.kernel.assign(np.where(mask, 123.0, dense.kernel.numpy()))
    x = kh.classification_data(n=4)[0]
    expected = x @ wrapper.effective_numpy()[0] + wrapper.effective_numpy()[1]
    np.testing.assert_allclose(np.asarray(wrapper(x)), expected, rtol=1e-5, atol=1e-5)
    assert dense.kernel is kernel_before and isinstance(dense.kernel, Variable)
    assert [id(v) for v in dense.weights] == before
    assert [compat.short_name(v) for v in dense.weights] == ["kernel", "bias"]


def test_an_error_inside_the_call_restores_the_attributes():
    fixed = _half_fixed(batchnorm=False)
    wrapper = wrappers_of(fixed)[0]
    kernel = wrapper.layer.kernel
    with pytest.raises(Exception):
        wrapper(np.ones((2, 5), "float32"))  # 5 features, the kernel takes 8
    assert wrapper.layer.kernel is kernel


def test_gradients_reach_the_free_entries_of_the_underlying_variables_only():
    fixed = _half_fixed()
    x, y = kh.classification_data(n=16)
    variables = [v for w in wrappers_of(fixed) for v in w.fixable_variables]
    masks = [m for w in wrappers_of(fixed) for m in w.mask_numpy()]
    for w in wrappers_of(fixed):
        w.fixing_step.assign(0)  # what UpdateFixingStep does before a training batch
    with tf.GradientTape() as tape:
        logits = fixed(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    grads = tape.gradient(loss, variables)
    assert all(g is not None for g in grads)
    for g, m in zip(grads, masks):
        g = np.asarray(tf.convert_to_tensor(g))
        assert (g[m] == 0).all()
        assert np.abs(g[~m]).sum() > 0 or not (~m).any()


def test_batchnorm_moving_statistics_update_in_training_only():
    fixed = _half_fixed()
    bn = [w for w in wrappers_of(fixed) if isinstance(w.layer, L.BatchNormalization)][0]
    mean = bn.layer.moving_mean.numpy().copy()
    x = kh.classification_data(n=16)[0] * 3 + 1
    fixed(x, training=False)
    np.testing.assert_array_equal(bn.layer.moving_mean.numpy(), mean)
    for w in wrappers_of(fixed):
        w.fixing_step.assign(0)  # what UpdateFixingStep does before a training batch
    fixed(x, training=True)
    assert not np.array_equal(bn.layer.moving_mean.numpy(), mean)
    assert isinstance(bn.layer.gamma, Variable)


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_wrapped_and_stripped_models_save_and_load(ext, tmp_path):
    fixed = _half_fixed()
    x = kh.classification_data(n=8)[0]
    path = os.path.join(tmp_path, f"mid.{ext}")
    fixed.save(path)
    with tfmot_wfn.fixing_scope():
        loaded = keras.models.load_model(path)
    kh.assert_states_equal(kh.network_state(loaded), kh.network_state(fixed))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), fixed.predict(x, verbose=0))
    stripped = tfmot_wfn.strip_fixing(fixed)
    path = os.path.join(tmp_path, f"stripped.{ext}")
    stripped.save(path)
    plain = keras.models.load_model(path)
    assert not wrappers_of(plain)
    np.testing.assert_array_equal(plain.predict(x, verbose=0), stripped.predict(x, verbose=0))


def test_variable_helpers():
    layer = L.Dense(2, name="probe")
    layer.build((None, 3))
    kernel = layer.kernel
    assert compat.short_name(kernel) == "kernel"
    assert compat.variable_path(kernel).endswith("kernel") and ":" not in compat.variable_path(kernel)
    assert compat.numpy_dtype(kernel) == np.float32
    assert compat.variable_dtype(kernel) == tf.float32
    assert compat.autocasts(kernel) is not compat.IS_LEGACY_KERAS  # tf_keras: only under mixed
    assert compat.steps_per_execution(object()) == 1
    assert compat.callback_params(object()) == {}
