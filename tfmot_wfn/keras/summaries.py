"""TensorBoard summaries of a model being fixed: palette-usage histogram, per-layer fixed fraction.

Functions that write into the current default summary writer (``with
writer.as_default():``), for `FixingSummaries` and for custom training loops:

```python
writer = tf.summary.create_file_writer("logs/fixing")
with writer.as_default():
    write_fixing_summaries(fixed_model, step=epoch)   # both of the below
    # write_palette_histogram(fixed_model, step)       # fixing/palette_usage
    # write_layer_fixed_fractions(fixed_model, step)   # fixing/layer_fixed_fraction/<layer>
```

They need no ``tensorboard`` package: ``tf.summary.histogram`` and
``tf.summary.scalar`` are implemented by tensorboard and raise without it, so
the summaries are written with TensorFlow's core ``tf.summary.write`` and the
plugin metadata TensorBoard reads (the "histograms" plugin for a float64
``[k, 3]`` tensor of ``(left edge, right edge, count)`` buckets, the "scalars"
plugin for a float32 scalar): the same records those functions write. The
histogram has one bucket per palette value (edges half way to the neighbouring
values), so TensorBoard shows how many weights use each value.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from tfmot_wfn.keras.compat import summary_metadata, tf
from tfmot_wfn.keras.network import FixingNetwork

HISTOGRAM_PLUGIN = "histograms"
SCALAR_PLUGIN = "scalars"
TEXT_PLUGIN = "text"
RULE_TAG = "fixing/rule"
PALETTE_TAG = "fixing/palette_usage"
LAYER_FRACTION_PREFIX = "fixing/layer_fixed_fraction"


def write_scalar(tag: str, value: float, step: int, description: str = "") -> bool:
    """A TensorBoard scalar (like ``tf.summary.scalar``) without the tensorboard package."""
    return bool(tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step),
                                 metadata=summary_metadata(SCALAR_PLUGIN, description)))


def write_text(tag: str, text: str, step: int, description: str = "") -> bool:
    """A TensorBoard text summary (like ``tf.summary.text``) without the tensorboard package."""
    return bool(tf.summary.write(tag, tf.constant(str(text)), step=int(step),
                                 metadata=summary_metadata(TEXT_PLUGIN, description)))


def write_fixing_rule(model, step: int) -> bool:
    """The fixing rule and distance of a wrapped model, as text (``fixing/rule``)."""
    network = FixingNetwork.find(model)
    if network is None:
        return False
    return write_text(RULE_TAG, f"rule {network.rule}, distance {network.distance:g}", step,
                      "tfmot_wfn fixing rule (fix_weights(..., rule=)) and final distance")


def write_histogram_buckets(tag: str, buckets: np.ndarray, step: int, description: str = "") -> bool:
    """A TensorBoard histogram from explicit ``[k, 3]`` (left, right, count) buckets."""
    buckets = np.asarray(buckets, np.float64).reshape(-1, 3)
    return bool(tf.summary.write(tag, tf.constant(buckets, tf.float64), step=int(step),
                                 metadata=summary_metadata(HISTOGRAM_PLUGIN, description)))


def palette_buckets(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[k, 3]`` histogram buckets, one per (sorted, distinct) value, edges half way between.

    The outer edges are as far out as the nearest neighbour is (or 1/2^8 of the
    value's magnitude, at least 1e-6, for a single value).
    """
    values = np.asarray(values, np.float64).ravel()
    counts = np.asarray(counts, np.float64).ravel()
    if values.size == 0:
        return np.zeros((0, 3), np.float64)
    if values.size == 1:
        half = max(abs(values[0]) / 256.0, 1e-6)
        return np.array([[values[0] - half, values[0] + half, counts[0]]])
    mids = (values[1:] + values[:-1]) / 2.0
    left = np.concatenate([[values[0] - (mids[0] - values[0])], mids])
    right = np.concatenate([mids, [values[-1] + (values[-1] - mids[-1])]])
    return np.stack([left, right, counts], axis=1)


def palette_usage(model) -> tuple:
    """``(palette values, number of fixed weights holding each)`` over all wrappers."""
    network = FixingNetwork.find(model)
    if network is None:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    return network.palette_usage()


def write_palette_histogram(model, step: int, tag: str = PALETTE_TAG) -> bool:
    """Histogram of the fixed weights over the palette: one bucket per palette value.

    Free (not yet fixed) weights are not counted. Writes nothing (returns False)
    before the first stage.
    """
    values, counts = palette_usage(model)
    if values.size == 0:
        return False
    return write_histogram_buckets(
        tag, palette_buckets(values, counts), step,
        description="Number of fixed weights holding each value of the shared palette.")


def layer_fixed_fractions(model) -> Dict[str, float]:
    """Fixed fraction of each wrapped layer's fixable weights, by the wrapped layer's name."""
    network = FixingNetwork.find(model)
    return {} if network is None else network.layer_fixed_fractions()


def write_layer_fixed_fractions(model, step: int, prefix: str = LAYER_FRACTION_PREFIX) -> Dict[str, float]:
    """One scalar per wrapped layer, ``<prefix>/<layer name>``; returns the fractions."""
    fractions = layer_fixed_fractions(model)
    for name, value in fractions.items():
        write_scalar(f"{prefix}/{name}", value, step)
    return fractions


def write_scalars(values: Dict[str, float], step: int, prefix: Optional[str] = None) -> None:
    """Several scalars (e.g. Keras ``logs``), tagged ``<prefix>/<name>``; non-numbers skipped."""
    for name, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        write_scalar(f"{prefix}/{name}" if prefix else name, number, step)


def write_fixing_summaries(model, step: int) -> None:
    """The palette histogram, the per-layer fixed fractions and the fixing rule, at `step`."""
    write_palette_histogram(model, step)
    write_layer_fixed_fractions(model, step)
    write_fixing_rule(model, step)
