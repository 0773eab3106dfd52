"""tfmot interop on tf_keras: prune -> strip -> fix (sparsity kept) -> strip -> export, and
fix -> strip -> quantization-aware training. What survives each step.

tfmot 0.8 runs on tf_keras only (importing it sets ``TF_USE_LEGACY_KERAS=1``), so
this module runs in the legacy job: ``TF_USE_LEGACY_KERAS=1 python -m pytest tests
-m legacy`` (``pip install ".[tests,legacy]"``). Numbers are printed (``-s``) and
checked; the README section "tf_keras (legacy Keras) and tfmot" quotes them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn import lite
from tfmot_wfn.keras.compat import keras, short_name, tf
from tfmot_wfn.keras.network import wrappers_of
from tfmot_wfn.tflite import flatbuffer as fb

pytestmark = [
    pytest.mark.legacy,
    pytest.mark.skipif(not tfmot_wfn.IS_LEGACY_KERAS,
                       reason="tfmot 0.8 runs on tf_keras only: run with TF_USE_LEGACY_KERAS=1"),
]

SPARSITY = 0.5
STEPS_PER_STAGE = 8
BATCH = 64


def _tfmot():
    return pytest.importorskip("tensorflow_model_optimization",
                               reason="pip install '.[legacy]' for tfmot")


def _kernels(model):
    """Every fixable weight of `model`, and its kernels (what tfmot prunes), as numpy."""
    rows = [(short_name(v), np.asarray(v.numpy())) for layer in model.layers
            for v in layer.weights if short_name(v) in ("kernel", "gamma", "beta", "bias")]
    return [a for _, a in rows], [a for n, a in rows if n == "kernel"]


def _zeros(arrays) -> float:
    return float(sum(int((a == 0).sum()) for a in arrays) / sum(a.size for a in arrays))


def _fit_schedule(model, digits, preserve_sparsity):
    keras.utils.set_random_seed(2)
    schedule = tfmot_wfn.StagedFixing(steps_per_stage=STEPS_PER_STAGE)
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule,
                                  preserve_sparsity=preserve_sparsity)
    kh.compile_classifier(fixed, keras.optimizers.Adam(1e-3, clipnorm=0.5))
    at_start = tfmot_wfn.fixed_fraction(fixed)
    steps = (len(schedule.fractions) - 1) * STEPS_PER_STAGE + 1
    epochs = math.ceil(steps / math.ceil(len(digits.x_train) / BATCH))
    fixed.fit(digits.x_train, digits.y_train, batch_size=BATCH, epochs=epochs, verbose=0,
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert tfmot_wfn.fixed_fraction(fixed) == 1.0
    return fixed, at_start


@pytest.fixture(scope="module")
def pruned(float_cnn, digits):
    """`float_cnn` pruned to 50% (kernels) by tfmot and stripped: a plain tf_keras model."""
    tfmot = _tfmot()
    prune = tfmot.sparsity.keras
    keras.utils.set_random_seed(1)
    schedule = prune.ConstantSparsity(SPARSITY, begin_step=0, frequency=1)
    wrapped = prune.prune_low_magnitude(float_cnn.model, pruning_schedule=schedule)
    kh.compile_classifier(wrapped, keras.optimizers.Adam(1e-3))
    wrapped.fit(digits.x_train, digits.y_train, batch_size=BATCH, epochs=4, verbose=0,
                callbacks=[prune.UpdatePruningStep()])
    plain = prune.strip_pruning(wrapped)
    kh.compile_classifier(plain)
    return plain, kh.accuracy(plain, digits.x_test, digits.y_test)


@pytest.fixture(scope="module")
def pruned_then_fixed(pruned, digits):
    plain, _ = pruned
    fixed, at_start = _fit_schedule(plain, digits, preserve_sparsity=True)
    return fixed, at_start, tfmot_wfn.strip_fixing(fixed)


def test_prune_strip_fix_strip_export_keeps_every_zero(pruned, pruned_then_fixed, digits,
                                                       tmp_path):
    plain, pruned_accuracy = pruned
    fixed, at_start, final = pruned_then_fixed
    weights0, kernels0 = _kernels(plain)
    weights1, kernels1 = _kernels(final)
    kernel_sparsity = _zeros(kernels0)
    assert kernel_sparsity >= SPARSITY - 0.01
    # fix_weights(preserve_sparsity=True) fixed every zero to 0 up front, counted as fixed.
    assert at_start == pytest.approx(_zeros(weights0))
    for before, after in zip(weights0, weights1):
        assert (after[before == 0] == 0).all()
    palette = tfmot_wfn.palette(final)
    assert 0.0 in palette and np.isin(np.concatenate([a.ravel() for a in weights1]), palette).all()
    accuracy = kh.accuracy(final, digits.x_test, digits.y_test)

    result = lite.export_tflite(final, tmp_path / "pruned_fixed.tflite")
    data = open(result.path, "rb").read()
    decoded = fb.read_model(lite.decode_palette(data))
    constants = [fb.constant_array(decoded, t) for _, _, t in fb.iter_tensors(decoded)
                 if fb.is_constant(decoded, t) and t.type == fb.type_value("FLOAT32")]
    indexed = {t.name for t in result.indexed}
    # Every kernel is palette-indexed; the decoded file holds exactly the Keras kernels' zeros.
    file_kernels = sorted((c for c in constants if c.size in {k.size for k in kernels1}
                           and c.ndim >= 2), key=lambda c: c.size)
    assert sorted(int((c == 0).sum()) for c in file_kernels) == sorted(
        int((k == 0).sum()) for k in kernels1)
    assert result.palette_size == palette.size and len(indexed) >= len(kernels1)
    out = lite.run_interpreter(lite.load_interpreter(result.path), digits.x_test)
    np.testing.assert_allclose(out, final.predict(digits.x_test, verbose=0), atol=1e-5)
    print(f"\n[tfmot interop] pruned kernels: {kernel_sparsity:.2%} zeros "
          f"(all fixable weights {_zeros(weights0):.2%}), accuracy {pruned_accuracy:.4f}")
    print(f"[tfmot interop] fix(preserve_sparsity) -> strip: fixed at start {at_start:.2%}, "
          f"kernel zeros {_zeros(kernels1):.2%} (all kept), unique "
          f"{tfmot_wfn.unique_weights(final)}, accuracy {accuracy:.4f}")
    print(f"[tfmot interop] export: {result.bytes:,} bytes, palette {result.palette_size}, "
          f"{len(indexed)} indexed tensors, zeros in file kernels "
          f"{sum(int((c == 0).sum()) for c in file_kernels)}")


def test_without_preserve_sparsity_nothing_is_fixed_up_front(pruned, digits):
    """Without the option the zeros are ordinary weights: nothing is fixed before the first
    stage, and a zero the stages do not fix at once trains like any other weight (here
    they end at 0 anyway: weights below 2**-7 go to the centre 0)."""
    plain, _ = pruned
    fixed, at_start = _fit_schedule(plain, digits, preserve_sparsity=False)
    final = tfmot_wfn.strip_fixing(fixed)
    weights0, kernels0 = _kernels(plain)
    _, kernels1 = _kernels(final)
    kept = sum(int((after[before == 0] == 0).sum()) for before, after in zip(kernels0, kernels1))
    total = sum(int((k == 0).sum()) for k in kernels0)
    assert at_start == 0.0
    print(f"\n[tfmot interop] fix without preserve_sparsity: {kept}/{total} "
          f"({kept / total:.2%}) of the pruned zeros still 0")
    assert 0 <= kept <= total


def _fake_quantized_kernels(q):
    """The int8 kernels QAT computes with: tfmot's 8-bit fake quantization with the
    wrapper's min/max (per channel for convolutions, per tensor for Dense)."""
    out = []
    for layer in q.layers:
        by_name = {short_name(v): v for v in layer.weights}
        if "kernel" not in by_name or "kernel_min" not in by_name:
            continue
        kernel, low, high = by_name["kernel"], by_name["kernel_min"], by_name["kernel_max"]
        if len(low.shape):
            values = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                kernel, low, high, num_bits=8, narrow_range=True)
        else:
            values = tf.quantization.fake_quant_with_min_max_vars(
                kernel, low, high, num_bits=8, narrow_range=True)
        out.append(np.asarray(values))
    return out


def _relative(a, b):
    """|a - b| relative to |b| (weights below 2**-7 relative to 2**-7)."""
    return np.abs(a - b) / np.maximum(np.abs(b), 2.0**-7)


def test_fixed_and_stripped_model_goes_through_quantization_aware_training(
        pruned_then_fixed, digits):
    tfmot = _tfmot()
    _, _, final = pruned_then_fixed
    palette = tfmot_wfn.palette(final)
    _, kernels = _kernels(final)
    fixed_accuracy = kh.accuracy(final, digits.x_test, digits.y_test)
    q = tfmot.quantization.keras.quantize_model(final)
    assert not wrappers_of(q)
    kh.compile_classifier(q, keras.optimizers.Adam(1e-4))

    def float_kernels():
        return [np.asarray(v.numpy()) for layer in q.layers for v in layer.weights
                if short_name(v) == "kernel"]

    for a, b in zip(float_kernels(), kernels):  # wrapping changes nothing yet
        np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(3)
    q.fit(digits.x_train, digits.y_train, batch_size=BATCH, epochs=1, verbose=0)

    shadow = float_kernels()  # the float weights QAT trains
    quantized = _fake_quantized_kernels(q)  # what its forward pass multiplies with
    assert len(shadow) == len(quantized) == len(kernels)
    flat = {name: np.concatenate([a.ravel() for a in arrays]).astype(np.float64)
            for name, arrays in (("fixed", kernels), ("shadow", shadow), ("int8", quantized))}
    zeros = flat["fixed"] == 0
    stats = {}
    for name in ("shadow", "int8"):
        change = _relative(flat[name], flat["fixed"])
        stats[name] = dict(unique=int(np.unique(np.float32(flat[name])).size),
                           max=float(change.max()), mean=float(change.mean()),
                           zeros_kept=int((flat[name][zeros] == 0).sum()),
                           in_palette=float(np.isin(np.float32(flat[name]), palette).mean()))
    accuracy = kh.accuracy(q, digits.x_test, digits.y_test)
    print(f"\n[tfmot interop] fix -> strip: {flat['fixed'].size} kernel weights, "
          f"{np.unique(flat['fixed']).size} unique kernel values (network palette "
          f"{palette.size}), {int(zeros.sum())} zeros, accuracy {fixed_accuracy:.4f}")
    for name, what in (("shadow", "float weights"), ("int8", "fake-quantized int8 kernels")):
        st = stats[name]
        print(f"[tfmot interop] QAT 1 epoch, {what}: {st['unique']} unique values, relative "
              f"change max {st['max']:.3g} mean {st['mean']:.3g}, {st['in_palette']:.2%} still "
              f"palette values, {st['zeros_kept']}/{int(zeros.sum())} zeros still 0")
    print(f"[tfmot interop] QAT accuracy {accuracy:.4f}")
    # QAT trains every weight (it knows nothing of the palette), so the values move off it.
    assert stats["shadow"]["unique"] > palette.size and stats["shadow"]["max"] > 0
    assert stats["int8"]["unique"] > np.unique(flat["fixed"]).size
