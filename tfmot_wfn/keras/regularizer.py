"""The WFN regulariser: pulls free weights toward the centres chosen so far.

``R = mean_i sum_k softmin_k(d_ik / tau) d_ik`` over the free weights, with
``d_ik = |w_i - c_k| / |w_i|`` (absolute distance for ``|w_i| <= g0``, and
distance 0 from the centre 0 for those). The total loss is
``task + alpha * R`` with ``alpha = gamma * task / R`` held constant (no
gradient), so the term is always worth ``gamma * task``.

Training uses a lookup table of the per-weight term, rebuilt once per stage
(`tfmot_wfn.core.regularizer_term`, `regularizer_table`; each `FixingNetwork`
owns one): two integer ops on
the float bits, one gather and a multiply-add per weight and step, within about
1e-6 of the exact term. The exact term,
`per_weight_term` (``regularization_value(..., exact=True)``), builds no dense
N x K matrix either:

* Small weights (``|w| <= g0``) use absolute distances, for which the softmin
  sums separate: ``exp(-|w - c|/tau) = exp(+-w/tau) exp(-+c/tau)``. Prefix sums
  over the sorted palette make their term EXACT in O(1) per weight.
* Larger weights use the `neighbours` nearest centres on each side (binary
  search in the sorted palette). Distances grow monotonically away from the
  weight on each side, so every dropped centre is at least as far as the
  outermost kept one, ``d_edge``; the error of a weight's term is at most
  ``n_dropped * (d_edge + r) * exp(-(d_edge - d_min) / tau)``
  (`truncation_bound` computes it; the tests check it).
"""

from __future__ import annotations

import types

from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, keras, legacy_loss_tracker, tf  # noqa: F401
from tfmot_wfn.keras.network import FixingNetwork

_EPS = 1e-14
#: Centres kept on each side of a weight larger than g0.
NEIGHBOURS = 8


def distances_to_centres(w, centres, zero_distance):
    """``d[i, k]`` as defined above, for weights `w` [n] and centres [n, m] or [m]."""
    w = w[:, None]
    absw = tf.abs(w)
    diff = tf.abs(w - centres)
    small = absw <= zero_distance
    d = tf.where(small, diff, diff / tf.maximum(absw, zero_distance))
    return tf.where(small & tf.equal(centres, 0.0), tf.zeros_like(d), d)


def _valid_palette(palette, palette_size):
    capacity = palette.shape[0]
    valid = tf.range(capacity, dtype=tf.int32) < palette_size
    padded = tf.where(valid, palette, tf.constant(3.0e38, tf.float32))
    return valid, padded


def _small_weight_term(w, palette, valid, padded, temperature, zero_distance):
    """Exact term for ``|w| <= g0`` (absolute distances) by prefix sums over the palette.

    Computed in float64: ``c - w`` is formed as a difference of sums, which would
    cancel badly in float32 for a weight next to a centre.
    """
    j = tf.searchsorted(padded, w, side="left", out_type=tf.int32)
    w = tf.cast(w, tf.float64)
    palette = tf.cast(palette, tf.float64)
    tau = tf.constant(temperature, tf.float64)
    nonzero = valid & tf.not_equal(palette, 0.0)
    has_zero = tf.reduce_any(valid & tf.equal(palette, 0.0))
    limit = 2.0 * zero_distance
    # Without a 0 in the palette, every factor is scaled by exp(shift / tau) (numerator and
    # denominator alike), shift = the nearest centre's magnitude less `limit`: else, with every
    # centre more than ~745 tau away, all of them underflow to 0 and so would the term.
    nearest = tf.reduce_min(tf.where(nonzero, tf.abs(palette), tf.constant(float("inf"), tf.float64)))
    shift = tf.where(has_zero | ~tf.reduce_any(nonzero), tf.constant(0.0, tf.float64),
                     tf.maximum(nearest - limit, 0.0))
    # Centres right of a small weight are >= -g0, those left of it <= g0: zero the
    # others so the exponentials cannot overflow (they never enter a needed sum).
    zeros = tf.zeros_like(palette)
    right = tf.where(nonzero & (palette >= -limit), tf.exp(-(palette - shift) / tau), zeros)
    left = tf.where(nonzero & (palette <= limit), tf.exp((palette + shift) / tau), zeros)
    zero = tf.zeros([1], tf.float64)
    right_sum = tf.concat([tf.cumsum(right, reverse=True), zero], 0)
    right_csum = tf.concat([tf.cumsum(right * palette, reverse=True), zero], 0)
    left_sum = tf.concat([zero, tf.cumsum(left)], 0)
    left_csum = tf.concat([zero, tf.cumsum(left * palette)], 0)
    up, down = tf.exp(w / tau), tf.exp(-w / tau)
    r_s, r_c = tf.gather(right_sum, j), tf.gather(right_csum, j)
    l_s, l_c = tf.gather(left_sum, j), tf.gather(left_csum, j)
    z = tf.cast(has_zero, tf.float64) + up * r_s + down * l_s
    numerator = up * (r_c - w * r_s) + down * (w * l_s - l_c)
    return tf.cast(numerator / tf.maximum(z, 1e-300), tf.float32)


def _large_weight_term(w, palette, palette_size, padded, temperature, zero_distance, neighbours):
    capacity = palette.shape[0]
    j = tf.searchsorted(padded, w, side="left", out_type=tf.int32)
    offsets = tf.range(-neighbours, neighbours, dtype=tf.int32)
    idx = j[:, None] + offsets[None, :]
    ok = (idx >= 0) & (idx < palette_size)
    centres = tf.gather(palette, tf.clip_by_value(idx, 0, capacity - 1))
    d = distances_to_centres(w, centres, zero_distance)
    d = tf.where(ok, d, tf.zeros_like(d))
    logits = tf.where(ok, -(d + _EPS) / temperature, tf.fill(tf.shape(d), -1e30))
    weights = tf.nn.softmax(logits, axis=1)
    return tf.reduce_sum(weights * d, axis=1)


def truncation_bound(w, palette, temperature, zero_distance, neighbours=NEIGHBOURS):
    """Per-weight upper bound (numpy) on ``|per_weight_term - exact term|``.

    0 for small weights (exact) and where no centre is dropped. For the others,
    with ``d_min`` the smallest kept distance, ``d_edge`` the outermost kept
    distance on a side that drops centres and ``r_kept`` the windowed term:
    ``n_dropped * exp(d_min/tau) * (g(d_edge) + r_kept * exp(-d_edge/tau))``,
    ``g(x) = x exp(-x/tau)`` for ``x >= tau`` (else its maximum ``tau/e``).
    """
    import numpy as np

    w = np.asarray(w, np.float64)
    c = np.sort(np.asarray(palette, np.float64))
    tau = float(temperature)
    out = np.zeros(w.shape)
    for i, x in enumerate(w):
        if abs(x) <= zero_distance:
            continue
        j = int(np.searchsorted(c, np.float32(x), side="left"))
        lo, hi = max(0, j - neighbours), min(c.size, j + neighbours)
        dropped = lo + (c.size - hi)
        if dropped == 0:
            continue
        d = np.abs(x - c[lo:hi]) / abs(x)
        edges = []
        if lo > 0:
            edges.append(abs(x - c[lo]) / abs(x))
        if hi < c.size:
            edges.append(abs(x - c[hi - 1]) / abs(x))
        d_edge, d_min = min(edges), d.min()
        p = np.exp(-(d - d_min) / tau)
        r_kept = float((p * d).sum() / p.sum())
        g = d_edge * np.exp(-d_edge / tau) if d_edge >= tau else tau / np.e
        out[i] = dropped * np.exp(d_min / tau) * (g + r_kept * np.exp(-d_edge / tau))
    return out


def per_weight_term(w, palette, palette_size, temperature, zero_distance, neighbours=NEIGHBOURS):
    """``sum_k softmin_k(d_ik / tau) d_ik`` for each weight (see the module docstring)."""
    w = tf.convert_to_tensor(w, tf.float32)
    palette = tf.convert_to_tensor(palette, tf.float32)
    valid, padded = _valid_palette(palette, palette_size)
    small = tf.abs(w) <= zero_distance
    # Each branch sees safe inputs where it is not selected, so no NaN leaks
    # into the gradient through tf.where.
    w_small = tf.where(small, w, 0.0)
    w_large = tf.where(small, tf.ones_like(w), w)
    r_small = _small_weight_term(w_small, palette, valid, padded, temperature, zero_distance)
    r_large = _large_weight_term(w_large, palette, palette_size, padded, temperature,
                                 zero_distance, neighbours)
    return tf.where(small, r_small, r_large)


def regularization_value(model_or_wrappers, exact: bool = False):
    """R over every free weight of the network (0 before the first stage).

    By default R comes from the per-stage lookup table (`regularizer_table`: no
    search, one gather per weight; within about 1e-6 of the exact term for every
    weight, see its ``max_error``); ``exact=True`` evaluates `per_weight_term` on
    every weight instead (much slower; for checking): exact for ``|w| <= g0`` and while
    the palette fits the window of ``NEIGHBOURS`` centres on each side, else within
    `truncation_bound`, which on large palettes exceeds the table's error.
    """
    network = FixingNetwork.find(model_or_wrappers)
    if network is None:
        return tf.constant(0.0)
    if not exact:
        table = network.regularizer_table
        if tf.executing_eagerly():
            table.refresh_if_changed()
        return table.value()
    palette, size = (tf.convert_to_tensor(v) for v in network.palette_variables)
    total = tf.constant(0.0)
    count = tf.constant(0.0)
    for slot in network.slots:
        w = tf.reshape(tf.cast(tf.convert_to_tensor(slot.variable), tf.float32), [-1])
        mask = slot.wrapper.masks[slot.index]
        free = 1.0 - tf.reshape(tf.cast(tf.convert_to_tensor(mask), tf.float32), [-1])
        r = per_weight_term(w, palette, size, network.temperature, network.zero_distance)
        total += tf.reduce_sum(r * free)
        count += tf.reduce_sum(free)
    return tf.where(size > 0, total / tf.maximum(count, 1.0), 0.0)


def regularized_loss(model_or_wrappers, task_loss):
    """``task_loss + alpha * R`` with ``alpha = gamma * task_loss / R`` (no gradient).

    Call this in a custom training loop on the task loss of each step (inside the
    GradientTape); `model.fit` does it for you on models made by `fix_weights`.
    """
    network = FixingNetwork.find(model_or_wrappers)
    if network is None or network.regularization == 0.0:
        return task_loss
    gamma = network.regularization
    r = regularization_value(network)
    task = tf.cast(task_loss, tf.float32)
    alpha = tf.stop_gradient(tf.where(r > 0, gamma * task / tf.maximum(r, 1e-30), 0.0))
    return task_loss + tf.cast(alpha * r, task_loss.dtype)


def _compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=None):
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        # tf_keras calls compute_loss(x, y, y_pred, sample_weight) from train_step and
        # test_step alike, without `training`: install() marks the train step.
        task = type(self).compute_loss(self, x, y, y_pred, sample_weight)
        if training is None:
            training = getattr(self, "_wfn_in_train_step", False)
    else:
        training = True if training is None else training
        task = type(self).compute_loss(self, x, y, y_pred, sample_weight, training=training)
    if not training:
        return task
    total = regularized_loss(self, task)
    tracker = legacy_loss_tracker(self)
    if tracker is not None and y is not None:  # pragma: no cover - legacy CI job
        # tf_keras logs the loss its compiled_loss computed (the task loss): add the
        # regulariser to that mean, weighted by the batch size as tf_keras weighs it,
        # so that fit logs the loss it minimises, as Keras 3 does.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = tf.cast(tf.shape(tf.nest.flatten(y)[0])[0], tracker.total.dtype)
        extra = tf.cast(total - task, tracker.total.dtype) * float(replicas)
        tracker.total.assign_add(extra * batch)
    return total


def install(model) -> bool:
    """Make `model.fit` add the regulariser to the loss. Returns True if newly installed."""
    if getattr(model, "_wfn_regularizer_installed", False):
        return False
    model.compute_loss = types.MethodType(_compute_loss, model)
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        # Tell _compute_loss (traced inside train_step) that it is training. Set
        # without tf_keras's attribute tracking: these are not layers or weights.
        train_step = model.train_step

        def marked_train_step(data):
            object.__setattr__(model, "_wfn_in_train_step", True)
            try:
                return train_step(data)
            finally:
                object.__setattr__(model, "_wfn_in_train_step", False)

        object.__setattr__(model, "train_step", marked_train_step)
    model._wfn_regularizer_installed = True
    return True
