"""The WFN regulariser: the per-weight term against a dense reference, R before/after stages,
the loss fit logs, its gradients, and a custom training loop."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfmot_wfn.keras.compat import keras
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.core import fixing_stage
from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE
from tfmot_wfn.keras import regularizer
from tfmot_wfn.keras.network import run_fixing_stage, wrappers_of

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini

TAU = 0.05
G0 = ZERO_DISTANCE


# ------------------------------------------------------------ dense reference
def dense_reference(w, centres, tau=TAU, g0=G0):
    """``sum_k softmin_k(d_ik / tau) d_ik`` over ALL centres, float64, from the algorithm doc:
    d_ik = |w_i - c_k| / |w_i| for |w_i| > g0, else |w_i - c_k|, and 0 to the centre 0."""
    w = np.asarray(w, np.float64)[:, None]
    c = np.asarray(centres, np.float64)[None, :]
    small = np.abs(w) <= g0
    d = np.where(small, np.abs(w - c), np.abs(w - c) / np.where(small, 1.0, np.abs(w)))
    d = np.where(small & (c == 0), 0.0, d)
    logits = -d / tau
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return (p * d).sum(axis=1)


def per_weight(w, palette, neighbours=regularizer.NEIGHBOURS, capacity=None, tau=TAU):
    palette = np.asarray(palette, np.float32)
    capacity = capacity or max(8, palette.size + 3)
    padded = np.zeros(capacity, np.float32)
    padded[: palette.size] = palette
    out = regularizer.per_weight_term(
        tf.constant(np.asarray(w, np.float32)), tf.constant(padded),
        tf.constant(palette.size, tf.int32), tau, G0, neighbours=neighbours)
    return out.numpy()


def realistic_palette(seed, fraction=0.95, distance=0.05, n=6000, scale=0.2):
    """A palette the greedy stage really produces on normal weights (0 and sums of powers of two)."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=n) * scale).astype(np.float32)
    result = fixing_stage(w, np.zeros(n, bool), fraction, distance, G0)
    return result.palette


def test_dense_reference_agrees_with_the_formula_by_hand():
    # w = 0.5 with centres {0.25, 1}: d = (0.5, 1.0); weights exp(-10), exp(-20).
    p1, p2 = np.exp(-10.0), np.exp(-20.0)
    expected = (p1 * 0.5 + p2 * 1.0) / (p1 + p2)
    assert dense_reference([0.5], [0.25, 1.0])[0] == pytest.approx(expected, rel=1e-12)
    # Small weight: absolute distances, and distance 0 to the centre 0.
    w = 0.004
    d = np.array([0.0, abs(w - 0.03125)])
    p = np.exp(-d / TAU) / np.exp(-d / TAU).sum()
    assert dense_reference([w], [0.0, 0.03125])[0] == pytest.approx((p * d).sum(), rel=1e-12)


palettes = st.lists(
    st.tuples(st.sampled_from([-1.0, 1.0]), st.integers(-9, 1), st.integers(0, 2),
              st.integers(1, 4)),
    min_size=1, max_size=40,
).map(lambda terms: np.unique(np.array(
    [s * (2.0 ** e) * (1 + t / 2.0 ** (m + 1)) for s, e, t, m in terms], np.float32)))


@settings(max_examples=40, deadline=None)
@given(
    palette=palettes,
    with_zero=st.booleans(),
    w=hnp.arrays(np.float32, st.integers(1, 300),
                 elements=st.floats(-3.0, 3.0, width=32, allow_subnormal=False)),
)
def test_per_weight_term_equals_dense_reference_when_every_centre_is_a_neighbour(palette, with_zero, w):
    if with_zero:
        palette = np.unique(np.append(palette, np.float32(0.0)))
    # Weights exactly on centres and tiny weights are the edge cases of the formula.
    w = np.concatenate([w, palette, palette * np.float32(1.001), np.float32([0.0, 1e-4, -G0, G0])])
    got = per_weight(w, palette, neighbours=palette.size)
    expected = dense_reference(w, palette)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_weight_term_equals_dense_reference_on_realistic_palettes_with_full_window(seed):
    palette = realistic_palette(seed)
    assert palette.size >= 8
    rng = np.random.default_rng(100 + seed)
    w = (rng.normal(size=5000) * 0.2).astype(np.float32)
    got = per_weight(w, palette, neighbours=palette.size)
    np.testing.assert_allclose(got, dense_reference(w, palette), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("source", ["digits_palette", "greedy_palette"])
def test_per_weight_term_default_neighbours_is_within_its_bound(source, fixed_cnn):
    if source == "digits_palette":
        palette = kh.wrapper_palette(wrappers_of(fixed_cnn.model)[0])
    else:
        palette = realistic_palette(0)
    rng = np.random.default_rng(5)
    w = (rng.normal(size=3000) * 0.2).astype(np.float32)
    got = per_weight(w, palette)
    ref = dense_reference(w, palette)
    bound = regularizer.truncation_bound(w, palette, TAU, G0)
    small = np.abs(w) <= G0
    # Small weights are exact (prefix sums); the others stay within the analytic bound.
    np.testing.assert_allclose(got[small], ref[small], rtol=2e-6, atol=1e-9)
    assert np.all(np.abs(got - ref) <= bound + 2e-6 * ref + 1e-9)
    # And R, the mean the loss uses, is accurate to well under a percent of a percent.
    assert abs(got.mean() - ref.mean()) <= 1e-4 * ref.mean()


@pytest.mark.parametrize("palette", [[0.125], [0.0, 0.125], [-0.25, 0.5],
                                     [-0.5, -0.25, -0.0625, 0.0, 0.03125, 0.125, 0.75, 1.5]])
def test_per_weight_term_is_exact_while_the_palette_fits_the_window(palette):
    # The window is NEIGHBOURS centres on each side of the insertion point: palettes of
    # up to NEIGHBOURS centres are always covered completely (small weights always are).
    palette = np.float32(palette)
    w = np.random.default_rng(0).normal(size=2000).astype(np.float32) * 0.4
    w = np.concatenate([w, palette, np.float32([0.0, G0, -G0 / 2])])
    np.testing.assert_allclose(per_weight(w, palette), dense_reference(w, palette),
                               rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("palette", [[40.0, 48.0], [-64.0, 50.0], [-40.0]])
def test_small_weights_far_from_every_centre_without_zero(palette):
    # No 0 in the palette and every centre more than ~745 tau away: the softmin factors
    # of the small-weight branch would all underflow to 0 without their common scaling.
    palette = np.float32(palette)
    w = np.float32([0.0, 1e-3, -3e-3, G0, -G0])
    np.testing.assert_allclose(per_weight(w, palette), dense_reference(w, palette), rtol=1e-6)


# ------------------------------------------------------------------ R itself
def test_r_is_zero_before_the_first_stage_and_positive_after():
    fixed = tfmot_wfn.fix_weights(kh.dense_model(seed=1))
    x, y = kh.classification_data()
    assert float(tfmot_wfn.regularization_value(fixed)) == 0.0
    task = tf.constant(1.234)
    assert float(tfmot_wfn.regularized_loss(fixed, task)) == pytest.approx(1.234, rel=1e-7)

    run_fixing_stage(fixed, 0.5, 0.1)
    r = float(tfmot_wfn.regularization_value(fixed))
    assert r > 0
    # R is the mean of the per-weight term over the free weights only.
    palette = kh.wrapper_palette(wrappers_of(fixed)[0])
    terms, free = [], []
    for w in wrappers_of(fixed):
        for v, m in zip(w.fixable_variables, w.mask_numpy()):
            terms.append(per_weight(v.numpy().ravel(), palette, capacity=w.palette_capacity))
            free.append(~m.ravel())
    terms, free = np.concatenate(terms), np.concatenate(free)
    assert r == pytest.approx(float(terms[free].mean()), rel=1e-5)
    assert float(tfmot_wfn.regularized_loss(fixed, task)) == pytest.approx(1.234 * 1.4, rel=1e-6)

    run_fixing_stage(fixed, 1.0, 0.1)  # nothing free: R = 0, the loss is the task loss
    assert float(tfmot_wfn.regularization_value(fixed)) == 0.0
    assert float(tfmot_wfn.regularized_loss(fixed, task)) == pytest.approx(1.234, rel=1e-7)


class FirstBatchLoss(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


@pytest.mark.parametrize("begin_step, fractions, gamma, factor", [
    (0, (0.5, 1.0), 0.4, 1.4),   # after the first stage: task * (1 + gamma)
    (0, (0.5, 1.0), 0.25, 1.25),
    (0, (0.5, 1.0), 0.0, 1.0),   # regulariser off
    (5, (0.5, 1.0), 0.4, 1.0),   # before the first stage R = 0
    (0, (1.0,), 0.4, 1.0),       # everything fixed: no free weight to pull
], ids=["gamma0.4", "gamma0.25", "gamma0", "before-stage", "all-fixed"])
def test_logged_fit_loss_is_one_plus_gamma_times_task_loss(begin_step, fractions, gamma, factor):
    model = kh.dense_model(seed=2)
    x, y = kh.classification_data(n=64, seed=2)
    fixed = tfmot_wfn.fix_weights(model, regularization=gamma, fixing_schedule=tfmot_wfn.StagedFixing(
        fractions, steps_per_stage=100, begin_step=begin_step))
    fixed.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logger = FirstBatchLoss()
    fixed.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0,
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0), logger])
    # lr = 0: the model evaluated now is the model the first batch saw (after its stage).
    task = fixed.evaluate(x, y, batch_size=64, verbose=0)
    assert logger.losses[0] == pytest.approx(factor * task, rel=1e-5)
    assert task == pytest.approx(float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y, fixed.predict(x, verbose=0))), rel=1e-5)


# --------------------------------------------------------------- gradients
def _stage_half(seed=3):
    fixed = tfmot_wfn.fix_weights(kh.dense_model(seed=seed))
    run_fixing_stage(fixed, 0.5, 0.1)
    variables = [v for w in wrappers_of(fixed) for v in w.fixable_variables]
    masks = [m for w in wrappers_of(fixed) for m in w.mask_numpy()]
    return fixed, variables, masks


def test_regulariser_gradient_is_nonzero_on_free_weights_and_zero_on_fixed():
    fixed, variables, masks = _stage_half()
    palette = kh.wrapper_palette(wrappers_of(fixed)[0])
    assert 0.0 in palette and (palette != 0).sum() >= 2
    with tf.GradientTape() as tape:
        r = tfmot_wfn.regularization_value(fixed)
    grads = tape.gradient(r, variables)
    flat = np.concatenate
    free_w = flat([v.numpy()[~m] for v, m in zip(variables, masks)])
    free_grads = flat([g.numpy()[~m] for g, m in zip(grads, masks)])
    fixed_grads = flat([g.numpy()[m] for g, m in zip(grads, masks)])
    assert free_grads.size > 0 and fixed_grads.size > 0
    assert np.all(np.isfinite(free_grads))
    np.testing.assert_array_equal(fixed_grads, 0.0)  # fixed weights are not pulled
    # Free weights whose nearest centre is not 0 are pulled toward it: the gradient
    # is nonzero and descending it moves the weight toward that centre. (A weight
    # above g0 whose nearest centre is 0 sits at relative distance exactly 1 from
    # it, where the formula is flat: its gradient underflows float32.)
    nearest = palette[np.argmin(np.abs(free_w[:, None] - palette[None, :]), axis=1)]
    pulled = (nearest != 0) & (free_w != nearest)
    assert pulled.sum() >= 20
    assert np.all(free_grads[pulled] != 0)
    assert np.mean(np.sign(free_grads[pulled]) == np.sign(free_w[pulled] - nearest[pulled])) > 0.95


def test_adaptive_alpha_carries_no_gradient():
    fixed, variables, _ = _stage_half()
    x, y = kh.classification_data(n=32, seed=3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    gamma = wrappers_of(fixed)[0].regularization
    with tf.GradientTape(persistent=True) as tape:
        task = loss_fn(y, fixed(x))
        r = tfmot_wfn.regularization_value(fixed)
        total = tfmot_wfn.regularized_loss(fixed, task)
    g_task = [g.numpy() for g in tape.gradient(task, variables)]
    g_r = [g.numpy() for g in tape.gradient(r, variables)]
    g_total = [g.numpy() for g in tape.gradient(total, variables)]
    alpha = gamma * float(task) / float(r)
    assert float(total) == pytest.approx((1 + gamma) * float(task), rel=1e-6)
    flat = np.concatenate
    expected = flat([(a + alpha * b).ravel() for a, b in zip(g_task, g_r)])
    got = flat([g.ravel() for g in g_total])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    # Had alpha been differentiated, the gradient would be (1 + gamma) * grad(task).
    wrong = (1 + gamma) * flat([g.ravel() for g in g_task])
    assert np.abs(got - wrong).max() > 100 * np.abs(got - expected).max()


# ------------------------------------------------------------ custom loop
def test_custom_training_loop_with_regularized_loss_and_the_callback():
    model = kh.dense_model(batchnorm=True, seed=9)
    x, y = kh.classification_data(n=96, seed=9)
    fractions = (0.3, 0.6, 1.0)
    fixed = tfmot_wfn.fix_weights(model, fixing_schedule=tfmot_wfn.StagedFixing(
        fractions, steps_per_stage=4))
    optimizer = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    fixed.optimizer = optimizer  # the README's custom loop: each stage restarts it
    cb = tfmot_wfn.UpdateFixingStep(verbose=0)
    cb.set_model(fixed)
    cb.on_train_begin()
    # The step advances at the first on_train_batch_begin: a training call before it is refused.
    with pytest.raises(tf.errors.InvalidArgumentError, match="on_train_batch_begin"):
        fixed(x[:2], training=True)
    values_after_stage, losses, factors = {}, [], []
    for step, (xb, yb) in enumerate(dataset):
        cb.on_train_batch_begin(step)
        if step in (0, 4, 8):
            values_after_stage[step] = (kh.flat_masks(fixed), kh.flat_values(fixed))
        with tf.GradientTape() as tape:
            task = loss_fn(yb, fixed(xb, training=True))
            loss = tfmot_wfn.regularized_loss(fixed, task)
        factors.append(float(loss) / float(task))
        losses.append(float(loss))
        grads = tape.gradient(loss, fixed.trainable_variables)
        optimizer.apply_gradients(zip(grads, fixed.trainable_variables))
    cb.on_train_end()

    assert len(cb.history) == 3 and [h.fraction for h in cb.history] == list(fractions)
    assert cb.step == 12
    assert all(int(w.fixing_step.numpy()) == 12 for w in wrappers_of(fixed))
    assert np.all(np.isfinite(losses))
    # Free weights were pulled with weight gamma: loss = 1.4 * task while any are free.
    assert factors[:8] == pytest.approx([1.4] * 8, rel=1e-5)
    assert factors[8:] == pytest.approx([1.0] * 4, rel=1e-6)
    # Each stage's fixed weights kept their values through the later training steps.
    final_values = kh.flat_values(fixed)
    for step, (mask, values) in values_after_stage.items():
        assert mask.sum() == int(mask.size * fractions[step // 4])
        assert final_values[mask].tobytes() == values[mask].tobytes()
    assert kh.flat_masks(fixed).all()
