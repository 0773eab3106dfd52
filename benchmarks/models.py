"""Models and data of the peer benchmark, buildable with Keras 3 and with legacy tf_keras.

Every builder takes the Keras module (``keras`` or ``tf_keras``) so that the tfmot
subprocess (``benchmarks/peers_tf_keras.py``, ``TF_USE_LEGACY_KERAS=1``) rebuilds
exactly the architecture that the main process (Keras 3) trained, layer names
included; weights travel between the two as ``{layer name: [arrays]}`` in an
``.npz`` file (`save_layer_weights` / `load_layer_weights`).

No TensorFlow import at module level: the data helpers only need numpy/sklearn.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: name -> settings shared by both processes. ``image``: the input the model sees
#: (digits are 8x8; the applications model gets them upscaled, 3 channels).
MODELS: Dict[str, Dict] = {
    "cnn": dict(
        title="demo CNN with BatchNorm (tfmot_wfn.apps.demo.build_cnn)",
        image=8, channels=1, float_epochs=30, float_lr=3e-3, batch=32,
    ),
    "mlp": dict(
        title="MLP 64-256-128-10 (ReLU)",
        image=8, channels=1, float_epochs=30, float_lr=3e-3, batch=32,
    ),
    "mobilenetv2": dict(
        title="keras.applications.MobileNetV2(alpha=0.35, weights=None), digits upscaled to 32x32x3",
        image=32, channels=3, float_epochs=24, float_lr=3e-3, batch=64,
    ),
}


def digits(image: int = 8, channels: int = 1, seed: int = 0):
    """scikit-learn digits, the demo's 80/20 stratified split; upscaled (bilinear) if asked.

    Returns float32 images in [0, 1] (N, image, image, channels) and int64 labels.
    """
    from tfmot_wfn.apps.demo import load_digits_split

    x_train, x_test, y_train, y_test = load_digits_split(seed)
    if image != 8:
        x_train, x_test = _upscale(x_train, image), _upscale(x_test, image)
    if channels != 1:
        x_train = np.repeat(x_train, channels, axis=-1)
        x_test = np.repeat(x_test, channels, axis=-1)
    return (np.ascontiguousarray(x_train, np.float32), np.ascontiguousarray(x_test, np.float32),
            y_train, y_test)


def _upscale(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upscaling (half-pixel centres, like tf.image.resize) in numpy."""
    n, h, w, c = x.shape

    def axis_weights(old: int, new: int):
        pos = (np.arange(new) + 0.5) * old / new - 0.5
        pos = np.clip(pos, 0, old - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, old - 1)
        frac = (pos - lo).astype(np.float32)
        m = np.zeros((new, old), np.float32)
        m[np.arange(new), lo] += 1 - frac
        m[np.arange(new), hi] += frac
        return m

    rows, cols = axis_weights(h, size), axis_weights(w, size)
    return np.einsum("ih,nhwc,jw->nijc", rows, x, cols).astype(np.float32)


def build(name: str, keras):
    """The model ``name`` (see `MODELS`), freshly initialised, with ``keras`` (3 or tf_keras)."""
    layers = keras.layers
    spec = MODELS[name]
    if name == "cnn":
        from tfmot_wfn.apps.demo import build_cnn

        return build_cnn(keras)
    if name == "mlp":
        inputs = keras.Input((spec["image"], spec["image"], spec["channels"]))
        h = layers.Flatten(name="flatten")(inputs)
        h = layers.Dense(256, activation="relu", name="dense1")(h)
        h = layers.Dense(128, activation="relu", name="dense2")(h)
        outputs = layers.Dense(10, activation="softmax", name="classifier")(h)
        return keras.Model(inputs, outputs, name="digits_mlp")
    if name == "mobilenetv2":
        model = keras.applications.MobileNetV2(
            input_shape=(spec["image"], spec["image"], spec["channels"]), alpha=0.35,
            weights=None, classes=10)
        # The application's BatchNorm momentum (0.999) needs thousands of steps for the
        # moving statistics to settle; this data set gives ~45 steps per epoch.
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
        return model
    raise KeyError(name)


def is_kernel_layer(layer, keras) -> bool:
    """The layers tfmot clusters / prunes here: Conv*, DepthwiseConv*, Dense."""
    L = keras.layers
    return isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv2D, L.Dense))


def kernel_arrays(model, keras) -> List[np.ndarray]:
    """The kernels (not biases) of the Conv/Dense layers, as numpy arrays."""
    out = []
    for layer in model.layers:
        if is_kernel_layer(layer, keras):
            kernel = getattr(layer, "depthwise_kernel", None)  # tf_keras's name
            if kernel is None:
                kernel = layer.kernel
            out.append(np.asarray(kernel.numpy()))
    return out


def save_layer_weights(model, path: str) -> None:
    """``{layer name: get_weights()}`` of every layer with weights, to one .npz file."""
    arrays = {}
    for layer in model.layers:
        for i, w in enumerate(layer.get_weights()):
            arrays[f"{layer.name}::{i:03d}"] = w
    np.savez(path, **arrays)


def load_layer_weights(model, path: str) -> None:
    """Inverse of `save_layer_weights` (checks names, counts and shapes)."""
    with np.load(path) as data:
        grouped: Dict[str, List] = {}
        for key in sorted(data.files):
            name, _ = key.rsplit("::", 1)
            grouped.setdefault(name, []).append(data[key])
    expected = {layer.name for layer in model.layers if layer.weights}
    if set(grouped) != expected:
        raise ValueError(f"weights file {path} has layers {sorted(set(grouped) ^ expected)} "
                         "that the model lacks or misses")
    for layer in model.layers:
        if layer.name in grouped:
            layer.set_weights(grouped[layer.name])
