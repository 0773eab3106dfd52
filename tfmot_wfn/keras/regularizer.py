"""The WFN regulariser: pulls free weights toward the centres chosen so far.

``R = mean_i sum_k softmin_k(d_ik / tau) d_ik`` over the free weights, with
``d_ik = |w_i - c_k| / |w_i|`` (absolute distance for ``|w_i| <= g0``, and
distance 0 from the centre 0 for those). The total loss is
``task + alpha * R`` with ``alpha = gamma * task / R`` held constant (no
gradient), so the term is always worth ``gamma * task``.

Only the `neighbours` nearest centres on each side of a weight enter its
softmin (the palette is sorted, so they are found by binary search): no dense
N x K matrix. A centre left out is farther than both kept centres on its side,
so its softmin weight is at most ``exp(-(d_out - d_min) / tau)`` of the
nearest one's; with the default 2 per side this is far below float32
resolution for the palettes WFN produces.
"""

from __future__ import annotations

import types

from tfmot_wfn.keras.compat import keras, tf
from tfmot_wfn.keras.network_fixing import wrappers_of

_EPS = 1e-14
NEIGHBOURS = 2


def distances_to_centres(w, centres, zero_distance):
    """``d[i, k]`` as defined above, for weights `w` [n] and centres [n, m] or [m]."""
    w = w[:, None]
    absw = tf.abs(w)
    diff = tf.abs(w - centres)
    small = absw <= zero_distance
    d = tf.where(small, diff, diff / tf.maximum(absw, zero_distance))
    return tf.where(small & tf.equal(centres, 0.0), tf.zeros_like(d), d)


def per_weight_term(w, palette, palette_size, temperature, zero_distance, neighbours=NEIGHBOURS):
    """``sum_k softmin_k(d_ik / tau) d_ik`` for each weight, from its nearest centres."""
    capacity = palette.shape[0]
    positions = tf.range(capacity, dtype=tf.int32)
    valid_palette = positions < palette_size
    big = tf.constant(3.0e38, tf.float32)
    padded = tf.where(valid_palette, palette, big)
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


def regularization_value(model_or_wrappers):
    """R over every free weight of the network (0 before the first stage)."""
    wrappers = (list(model_or_wrappers) if isinstance(model_or_wrappers, (list, tuple))
                else wrappers_of(model_or_wrappers))
    if not wrappers:
        return tf.constant(0.0)
    first = wrappers[0]
    palette = tf.convert_to_tensor(first.palette)
    size = tf.convert_to_tensor(first.palette_size)
    total = tf.constant(0.0)
    count = tf.constant(0.0)
    for wrapper in wrappers:
        for i, v in enumerate(wrapper.fixable_variables):
            w = tf.reshape(tf.cast(tf.convert_to_tensor(v), tf.float32), [-1])
            free = 1.0 - tf.reshape(tf.cast(tf.convert_to_tensor(wrapper.masks[i]), tf.float32), [-1])
            r = per_weight_term(w, palette, size, wrapper.temperature, wrapper.zero_distance)
            total += tf.reduce_sum(r * free)
            count += tf.reduce_sum(free)
    return tf.where(size > 0, total / tf.maximum(count, 1.0), 0.0)


def regularized_loss(model_or_wrappers, task_loss):
    """``task_loss + alpha * R`` with ``alpha = gamma * task_loss / R`` (no gradient).

    Call this in a custom training loop on the task loss of each step (inside the
    GradientTape); `model.fit` does it for you on models made by `fix_weights`.
    """
    wrappers = (list(model_or_wrappers) if isinstance(model_or_wrappers, (list, tuple))
                else wrappers_of(model_or_wrappers))
    if not wrappers or wrappers[0].regularization == 0.0:
        return task_loss
    gamma = wrappers[0].regularization
    r = regularization_value(wrappers)
    task = tf.cast(task_loss, tf.float32)
    alpha = tf.stop_gradient(tf.where(r > 0, gamma * task / tf.maximum(r, 1e-30), 0.0))
    return task_loss + tf.cast(alpha * r, task_loss.dtype)


def _compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    task = type(self).compute_loss(self, x, y, y_pred, sample_weight, training=training)
    if not training:
        return task
    return regularized_loss(self, task)


def install(model) -> bool:
    """Make `model.fit` add the regulariser to the loss. Returns True if newly installed."""
    if getattr(model, "_wfn_regularizer_installed", False):
        return False
    model.compute_loss = types.MethodType(_compute_loss, model)
    model._wfn_regularizer_installed = True
    return True
