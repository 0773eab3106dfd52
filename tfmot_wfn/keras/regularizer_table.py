"""The regulariser's lookup table in TensorFlow variables, refreshed once per fixing stage.

`tfmot_wfn.core.regularizer_term.interpolation_table` tabulates the per-weight term
``f(w)`` for the current palette. `RegularizerTable` keeps that table and the
network's free-weight mask (flattened in the order of `flat_weights`) in
non-trainable ``tf.Variable``s of fixed shapes, so the compiled train step reads
the current table without retracing; `refresh` rewrites them after a stage, after
a restore, or whenever the palette or the masks may have changed.

A training step then costs, for all fixable weights of the network together: one
concatenation, two integer ops on the float bits (the bucket of each weight), one
gather of the bucket's (intercept, slope) pair and two dot products, and one
multiply for the gradient, instead of a window of centres per weight. The expanded
table (one row per value of the top 20 bits of a float32: 8 MiB) makes the bucket
lookup branch- and clip-free.

The variables are derived data: they are not tracked by Keras and never saved;
the palette and masks they are made from are. Each `FixingNetwork` owns one
table (``network.regularizer_table``), made on first use.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from tfmot_wfn.core import regularizer_term
from tfmot_wfn.keras.compat import tf


def flat_weights(variables: Sequence) -> tf.Tensor:
    """`variables`, flattened and concatenated (float32): the network's weight vector."""
    parts = [tf.reshape(tf.cast(tf.convert_to_tensor(v), tf.float32), [-1]) for v in variables]
    return parts[0] if len(parts) == 1 else tf.concat(parts, 0)


def expanded_rows(w):
    """`regularizer_term.expanded_rows` in TensorFlow: a subtraction and a shift.

    On the float bits read as uint32, so the shift is logical and needs no mask (an
    int32 shift is arithmetic); the rows come back as int32 by a bitcast (no copy).
    uint32 also keeps the subtraction on a GPU: TensorFlow registers its GPU ``Sub``
    kernel for int32 in host memory only (``cwise_op_sub.cc``), for uint32 on the device.
    """
    bits = tf.bitcast(w, tf.uint32)
    rows = tf.bitwise.right_shift(bits - tf.constant(1, tf.uint32),
                                  tf.constant(regularizer_term._SHIFT, tf.uint32))
    return tf.bitcast(rows, tf.int32)


def table_terms(w, coefficients, split_coefficients=None, split: int = -1, g0=None):
    """``(a, b)`` per weight with ``f(w) ~= a + b * w``, from the expanded table (TensorFlow).

    `coefficients`: ``regularizer_term.expand(table)``, [EXPANDED_ROWS, 2] (intercept,
    slope): one gather of both per weight (two gathers of one float each cost about
    twice as much in TensorFlow on a CPU). `split` (``table.split_row``),
    `split_coefficients` (its last 4 rows) and `g0` only matter when g0 is not a
    bucket boundary.
    """
    rows = expanded_rows(w)
    ab = tf.gather(tf.convert_to_tensor(coefficients), rows)
    a, b = ab[:, 0], ab[:, 1]
    if split >= 0:  # only for a g0 that is not a bucket boundary (the default is)
        half = regularizer_term.EXPANDED_ROWS // 2
        magnitude_row = tf.where(rows >= half, rows - half, rows)
        in_split = tf.equal(magnitude_row - regularizer_term._BASE, split)
        special = tf.where(rows >= half, 2, 0) + tf.cast(tf.abs(w) > np.float32(g0), tf.int32)
        ab = tf.gather(tf.convert_to_tensor(split_coefficients), special)
        a = tf.where(in_split, ab[:, 0], a)
        b = tf.where(in_split, ab[:, 1], b)
    return a, b


class RegularizerTable:
    """The interpolation table and free mask of one network (see the module docstring).

    Args:
      network: the `FixingNetwork` whose settings (temperature, zero_distance),
        palette, masks and weights (``network.variables``, in flat order) it reads.
    """

    def __init__(self, network):
        self.network = network
        self.size = int(network.size)
        self.max_error = 0.0
        self._state: Tuple = ()
        g0 = network.zero_distance
        self._split = regularizer_term.split_row(g0)
        self._g0 = np.float32(g0)
        rows = regularizer_term.EXPANDED_ROWS
        with tf.init_scope():
            self.coefficients = tf.Variable(np.zeros((rows, 2), np.float32), trainable=False,
                                            name="wfn_regularizer_coefficients")
            # Only used when g0 is not a bucket boundary (see InterpolationTable.split_row).
            self.split_coefficients = tf.Variable(np.zeros((4, 2), np.float32), trainable=False,
                                                  name="wfn_regularizer_split")
            self.free = tf.Variable(np.zeros(self.size, np.float32), trainable=False,
                                    name="wfn_regularizer_free")
            self.free_count = tf.Variable(0.0, trainable=False, name="wfn_regularizer_free_count")
        self.refresh()

    def _inputs(self):
        """The palette and every fixed mask (flat), which the table is made from."""
        masks = [m.ravel() for w in self.network.wrappers for m in w.mask_numpy()]
        return self.network.palette(), masks

    @staticmethod
    def _state_of(palette, masks) -> Tuple:
        """Cheap fingerprint of the inputs: the palette and the fixed count per weight."""
        return palette.tobytes(), tuple(int(np.count_nonzero(m)) for m in masks)

    def refresh(self) -> None:
        """Rebuild the table from the wrappers' palette and masks (eager)."""
        with tf.init_scope():
            palette, masks = self._inputs()
            table = regularizer_term.interpolation_table(palette, self.network.temperature,
                                                         self.network.zero_distance)
            free = (~np.concatenate(masks) if masks else np.zeros(0, bool)).astype(np.float32)
            self.coefficients.assign(regularizer_term.expand(table))
            self.split_coefficients.assign(
                table.coefficients[2 * regularizer_term.BUCKETS:].astype(np.float32))
            self.free.assign(free)
            self.free_count.assign(float(free.sum()))
            self.max_error = table.max_error
            self._state = self._state_of(palette, masks)

    def refresh_if_changed(self) -> bool:
        """Eager only: rebuild if the palette or the fixed counts changed. True if rebuilt."""
        with tf.init_scope():
            if self._state_of(*self._inputs()) == self._state:
                return False
        self.refresh()
        return True

    def terms(self, w):
        """The tabulated per-weight term's (intercept, slope) for a flat float32 tensor `w`."""
        return table_terms(w, self.coefficients, self.split_coefficients, self._split, self._g0)

    def value(self, weights=None) -> tf.Tensor:
        """R: the mean of the tabulated term over the free weights (0 if none is free).

        Its gradient is written out (`tf.custom_gradient`): ``slope * free / count``
        per weight, one multiply, instead of the autodiff of the gathers.
        """
        w = flat_weights(self.network.variables) if weights is None else weights
        free = tf.convert_to_tensor(self.free)
        count = tf.maximum(tf.convert_to_tensor(self.free_count), 1.0)
        a, b = self.terms(tf.stop_gradient(w))
        pull = b * free

        @tf.custom_gradient
        def mean_term(x):
            total = tf.tensordot(a, free, 1) + tf.tensordot(pull, x, 1)

            def grad(upstream):
                return upstream * pull / count

            return total / count, grad

        return mean_term(w)
