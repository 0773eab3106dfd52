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
#: (digits are 8x8; the applications model gets them upscaled, 3 channels). ``depthwise``:
#: the model has depthwise convolutions (``fix_weights(rule="auto")`` then picks
#: `fixing_rules.DEPTHWISE_RULE`). ``augment``: the float model trains on augmented copies of
#: the images (`run.augmented_epochs`; without it the photo ResNet-20 stopped at 55-57%), and
#: every fine-tuning (WFN, tfmot, the control, the distance search) on `augmented_dataset`.
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
        image=32, channels=3, float_epochs=24, float_lr=3e-3, batch=64, depthwise=True,
    ),
    # Real photographs (CIFAR-10, see `cifar10_photos`).
    "resnet20": dict(
        title="CIFAR ResNet-20 (3x3 convs, BatchNorm, 16/32/64 channels), real CIFAR-10 photos",
        image=32, channels=3, float_epochs=60, float_lr=3e-3, batch=64, data="cifar10",
        augment=True,
    ),
    "mobilenetv2_cifar": dict(
        title="keras.applications.MobileNetV2(alpha=0.35, weights=None) at 32x32, real CIFAR-10 photos",
        image=32, channels=3, float_epochs=60, float_lr=3e-3, batch=64, data="cifar10",
        depthwise=True, augment=True,
    ),
}

#: Where the CIFAR-10 photographs are read from (5,085 training photos; see its README).
CIFAR10_NPZ = os.environ.get(
    "WFN_CIFAR10_NPZ", os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10_train_part.npz"))
#: Held-out photos: the last 217 of each of the file's five CIFAR-10 batches (1,085 in all).
CIFAR10_TEST_PER_BATCH = 217
CIFAR10_PER_BATCH = 1017


def cifar10_photos(use_tfds: bool = False):
    """Real CIFAR-10 photographs: ``(x_train, x_test, y_train, y_test)``, float32 in [0, 1].

    Reads `CIFAR10_NPZ` (``$WFN_CIFAR10_NPZ`` or ``../shared/data/cifar10_train_part.npz``):
    5,085 photos, the first 1,017 of each training batch; the last 217 of each batch are
    held out as the test split (4,000 train / 1,085 test). With ``use_tfds=True`` the whole
    data set comes from tfds (``cifar10``, train/test) through `tfmot_wfn.data.from_tfds`.
    """
    if use_tfds:
        return _cifar10_from_tfds()
    if not os.path.isfile(CIFAR10_NPZ):
        raise FileNotFoundError(
            f"CIFAR-10 photographs not found at {CIFAR10_NPZ}: set WFN_CIFAR10_NPZ to a .npz with "
            "uint8 x (N, 32, 32, 3) and y (N,), or run with --cifar-tfds to download CIFAR-10 "
            "through tensorflow-datasets")
    with np.load(CIFAR10_NPZ) as data:
        x, y = data["x"], data["y"].astype(np.int64)
    position = np.arange(len(y)) % CIFAR10_PER_BATCH
    test = position >= CIFAR10_PER_BATCH - CIFAR10_TEST_PER_BATCH
    x = x.astype(np.float32) / 255.0
    return (np.ascontiguousarray(x[~test]), np.ascontiguousarray(x[test]), y[~test], y[test])


def _cifar10_from_tfds():
    from tfmot_wfn import data

    cifar = data.from_tfds("cifar10", split="train", eval_split="test", batch_size=1024,
                           normalization="unit")
    arrays = []
    for ds in (cifar.train_dataset(seed=0, augment=False), cifar.eval_dataset()):
        xs, ys = zip(*[(np.asarray(x), np.asarray(y)) for x, y in ds])
        arrays.append((np.concatenate(xs), np.concatenate(ys).astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = arrays
    return x_train, x_test, y_train, y_test


def dataset(name: str, seed: int = 0):
    """The data of model ``name``: digits (8x8, or upscaled) or real CIFAR-10 photos."""
    spec = MODELS[name]
    if spec.get("data") == "cifar10":
        return cifar10_photos(use_tfds=bool(os.environ.get("WFN_CIFAR10_TFDS")))
    return digits(spec["image"], spec["channels"], seed)


def augmented_dataset(x: np.ndarray, y: np.ndarray, batch: int, seed: int):
    """A batched ``tf.data.Dataset`` of augmented ``(x, y)`` for fine-tuning: every pass
    reshuffles the images and draws a new augmentation of each with
    `tfmot_wfn.apps.data.random_crop_and_flip` (the CLI's training augmentation, and the recipe
    of the float training's `run.augmented_epochs` at 32x32: reflect-pad by a eighth of the side,
    a random crop back, a random horizontal flip), from seeds derived from ``seed`` (the same
    sequence of passes for the same seed). One pass is ``ceil(len(x) / batch)`` batches, as
    ``fit(x, y, batch)`` takes, so step-based fixing schedules are unchanged. Usable by Keras 3
    and tf_keras (both take a dataset in ``fit``) and by `tfmot_wfn.search_distance`."""
    import tensorflow as tf

    from tfmot_wfn.apps.data import random_crop_and_flip

    size = x.shape[1:3]
    images = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(x), seed=int(seed), reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=int(seed) + 1, rerandomize_each_iteration=True).batch(2)

    def crop_and_flip(pair, draw):
        image, label = pair
        return random_crop_and_flip(image, size, draw), label

    return (tf.data.Dataset.zip((images, seeds))
            .map(crop_and_flip, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch).prefetch(tf.data.AUTOTUNE))


def resnet20(keras, classes: int = 10, blocks: int = 3):
    """The CIFAR ResNet-20 of He et al. (2016): 3 stages of 3 basic blocks, 16/32/64 channels."""
    L = keras.layers
    inputs = keras.Input((32, 32, 3))

    def conv_bn(h, filters, stride, name, relu=True):
        h = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                     name=f"{name}_conv")(h)
        h = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(h)
        return L.ReLU(name=f"{name}_relu")(h) if relu else h

    h = conv_bn(inputs, 16, 1, "stem")
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage}b{block}"
            y = conv_bn(h, filters, stride, f"{name}a")
            y = conv_bn(y, filters, 1, f"{name}b", relu=False)
            if stride != 1 or h.shape[-1] != filters:
                h = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(h)
                h = L.BatchNormalization(momentum=0.9, name=f"{name}_proj_bn")(h)
            h = L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([h, y]))
    h = L.GlobalAveragePooling2D(name="pool")(h)
    outputs = L.Dense(classes, activation="softmax", name="classifier")(h)
    return keras.Model(inputs, outputs, name="resnet20")


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
    if name == "resnet20":
        return resnet20(keras)
    if name in ("mobilenetv2", "mobilenetv2_cifar"):
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


def default_rule(name: str) -> str:
    """The rule ``fix_weights``' default (``rule="auto"``) picks for model `name`."""
    from tfmot_wfn.core import fixing_rules

    return fixing_rules.choose_rule(fixing_rules.DEFAULT_RULE, MODELS[name].get("depthwise", False))


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
