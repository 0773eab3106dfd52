"""Fast `tf.data` input pipelines for image classification: tfds datasets and image folders.

```python
from tfmot_wfn.apps import data

cifar = data.from_tfds("cifar10", image_size=32, batch_size=128)     # train + test splits
model.fit(cifar.train_dataset(seed=0), validation_data=cifar.eval_dataset(), epochs=3)

folder = data.from_directory("flowers/", image_size=160)            # class sub-folders
photos = data.from_arrays(x_train, y_train, (x_test, y_test), batch_size=128)  # uint8 arrays
ds = data.image_classification_pipeline(my_ds, training=True, image_size=64, batch_size=32)
```

What the pipelines do (the standard recipe for image classification):

* decode once, convert the channels to the model's (grayscale <-> RGB), and bring
  every image to a fixed *storage size*: the image size itself for small images
  (<= 64 pixels, e.g. CIFAR), else the shorter side resized to ``size / 0.875`` and
  centre-cropped to a square (the usual ImageNet evaluation resize);
* ``cache()`` those uint8 images in memory when they fit (``cache="auto"``: the
  estimated size is below ``cache_limit_bytes``), so later epochs skip decoding;
* training: shuffle (the whole split when cached), random crop (small images:
  pad by size/8, then crop; large ones: crop from the storage size) and random
  horizontal flip, with stateless random ops seeded by ``seed`` so a run is
  reproducible (and a resumed run sees the same batches as an uninterrupted one);
* evaluation: centre crop; no shuffling;
* normalise (``"unit"``: [0, 1]; ``"symmetric"``: [-1, 1]; ``"imagenet"``: mean/std
  of ImageNet on [0, 1]; ``"none"``: float 0..255, for models that rescale
  themselves), batch, and ``prefetch(AUTOTUNE)``; maps run in parallel.

Nothing is downloaded unless you ask for a tfds dataset that is not prepared yet
(``download=True``, tfds' default). Tests use ``tensorflow_datasets.testing.mock_data``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

NORMALIZATIONS = ("unit", "symmetric", "imagenet", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Images at most this large are "small" (CIFAR-style pad-and-crop augmentation).
SMALL_IMAGE = 64
#: ImageNet-style evaluation: resize to size / CROP_FRACTION, centre-crop `size`.
CROP_FRACTION = 0.875
DEFAULT_IMAGE_SIZE = 224
EVAL_SPLITS = ("test", "validation", "valid", "val")
DIRECTORY_EVAL_FOLDERS = ("val", "validation", "valid", "test")
AUTOTUNE = -1  # tf.data.AUTOTUNE

Size = Union[int, Sequence[int]]


def _tf():
    import tensorflow as tf

    return tf


# ------------------------------------------------------------------ arguments
def parse_dataset_spec(spec: str) -> Tuple[str, Optional[str]]:
    """``"cifar10:train[:90%]"`` -> ``("cifar10", "train[:90%]")``; ``"cifar10"`` -> ``("cifar10", None)``.

    The name may carry a tfds config and version (``"imagenette/320px-v2"``); the
    split is anything tfds accepts after the first colon.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a dataset is written NAME or NAME:SPLIT, got {spec!r}")
    name, _, split = spec.strip().partition(":")
    if not name:
        raise ValueError(f"a dataset is written NAME or NAME:SPLIT, got {spec!r}")
    return name, (split or None)


def _size2(size: Size) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError):
            raise ValueError(f"image_size must be an int or (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {size!r}")
    return h, w


def storage_size(image_size: Size) -> Tuple[int, int]:
    """The fixed size images are decoded to (and cached at) before cropping."""
    h, w = _size2(image_size)
    if max(h, w) <= SMALL_IMAGE:
        return h, w
    return int(math.ceil(h / CROP_FRACTION)), int(math.ceil(w / CROP_FRACTION))


def _check_normalization(normalization: str) -> str:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    return normalization


def _available_memory() -> Optional[int]:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return None


def default_cache_limit() -> int:
    """In-memory cache budget: 40% of the free memory, at most 4 GiB (2 GiB if unknown)."""
    free = _available_memory()
    if free is None:  # pragma: no cover
        return 2 << 30
    return int(min(4 << 30, 0.4 * free))


# ------------------------------------------------------------ image functions
def to_channels(image, channels: Optional[int]):
    """Grayscale <-> RGB (drops alpha) so the image has `channels` channels."""
    tf = _tf()
    if channels is None:
        return image
    have = image.shape[-1]
    if have == channels or have is None:
        return image
    if have == 4:
        image = image[..., :3]
        have = 3
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), image.dtype)
    if have == channels:
        return image
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def resize_to_storage(image, image_size: Size):
    """uint8 image -> uint8 image of `storage_size(image_size)` (shorter side + centre crop)."""
    tf = _tf()
    th, tw = storage_size(image_size)
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    scale = tf.maximum(th / h, tw / w)
    nh = tf.maximum(th, tf.cast(tf.math.ceil(h * scale), tf.int32))
    nw = tf.maximum(tw, tf.cast(tf.math.ceil(w * scale), tf.int32))
    same = tf.logical_and(tf.equal(shape[0], th), tf.equal(shape[1], tw))

    def resized():
        r = tf.image.resize(image, (nh, nw), method="bilinear", antialias=True)
        r = tf.image.crop_to_bounding_box(r, (nh - th) // 2, (nw - tw) // 2, th, tw)
        return tf.cast(tf.clip_by_value(tf.round(r), 0, 255), tf.uint8)

    out = tf.cond(same, lambda: tf.cast(image, tf.uint8), resized)
    return tf.ensure_shape(out, (th, tw, image.shape[-1]))


def center_crop(image, image_size: Size):
    """Centre crop of `image_size` from an image of `storage_size(image_size)`."""
    tf = _tf()
    h, w = _size2(image_size)
    sh, sw = storage_size(image_size)
    if (sh, sw) == (h, w):
        return image
    return tf.image.crop_to_bounding_box(image, (sh - h) // 2, (sw - w) // 2, h, w)


def random_crop_and_flip(image, image_size: Size, seed):
    """Training augmentation with stateless ops: random crop and horizontal flip.

    Small images are padded by size/8 on each side first (CIFAR recipe); larger
    ones are cropped from their storage size. `seed` is a shape-[2] int tensor.
    """
    tf = _tf()
    h, w = _size2(image_size)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    if max(h, w) <= SMALL_IMAGE:
        ph, pw = max(1, h // 8), max(1, w // 8)
        image = tf.pad(image, [[ph, ph], [pw, pw], [0, 0]], mode="REFLECT")
    channels = image.shape[-1]
    image = tf.image.stateless_random_crop(image, (h, w, channels), seed=seeds[0])
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def normalize(image, normalization: str = "unit"):
    """uint8 image -> float32 in the model's input range (see `NORMALIZATIONS`)."""
    tf = _tf()
    _check_normalization(normalization)
    x = tf.cast(image, tf.float32)
    if normalization == "none":
        return x
    if normalization == "symmetric":
        return x / 127.5 - 1.0
    x = x / 255.0
    if normalization == "imagenet":
        channels = image.shape[-1]
        if channels == 1:
            mean, std = (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
        else:  # RGB; an alpha channel (RGBA) is left in [0, 1]
            mean = tuple(IMAGENET_MEAN) + (0.0,) * (channels - len(IMAGENET_MEAN))
            std = tuple(IMAGENET_STD) + (1.0,) * (channels - len(IMAGENET_STD))
        x = (x - tf.constant(mean[:channels], tf.float32)) / tf.constant(std[:channels], tf.float32)
    return x


def prepare_images(dataset, image_size: Size, channels: Optional[int] = None):
    """``(image, label)`` dataset -> uint8 images at the storage size (cacheable), in parallel."""
    tf = _tf()

    def prepare(image, label):
        if image.dtype != tf.uint8:  # e.g. image_dataset_from_directory's float 0..255
            image = tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0, 255), tf.uint8)
        image = to_channels(image, channels)
        return resize_to_storage(image, image_size), tf.cast(label, tf.int64)

    return dataset.map(prepare, num_parallel_calls=AUTOTUNE)


def finish_pipeline(prepared, training: bool, image_size: Size, batch_size: int, *,
                    normalization: str = "unit", seed: int = 0, shuffle_buffer: int = 1024,
                    augment: bool = True, drop_remainder: bool = False):
    """Storage-size uint8 dataset -> batched float32 batches (train or eval variant), prefetched.

    Training: shuffled with `seed` (a new order each epoch, the same sequence of
    orders for the same seed), random crop + flip seeded per element, then
    normalised. Evaluation: centre crop and normalise, in order.
    """
    tf = _tf()
    _check_normalization(normalization)
    if training:
        ds = prepared.shuffle(max(1, int(shuffle_buffer)), seed=int(seed),
                              reshuffle_each_iteration=True)
        if augment:
            seeds = tf.data.Dataset.random(seed=int(seed) + 1, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip((ds, seeds.batch(2)))

            def train_map(pair, s):
                image, label = pair
                image = random_crop_and_flip(image, image_size, s)
                return normalize(image, normalization), label
        else:
            def train_map(image, label):
                return normalize(center_crop(image, image_size), normalization), label
        ds = ds.map(train_map, num_parallel_calls=AUTOTUNE)
    else:
        def eval_map(image, label):
            return normalize(center_crop(image, image_size), normalization), label

        ds = prepared.map(eval_map, num_parallel_calls=AUTOTUNE)
    return ds.batch(int(batch_size), drop_remainder=drop_remainder).prefetch(AUTOTUNE)


def image_classification_pipeline(dataset, training: bool, image_size: Size, batch_size: int = 64,
                                  normalization: str = "unit", channels: Optional[int] = None,
                                  cache: Union[bool, str] = False, seed: int = 0,
                                  shuffle_buffer: int = 1024):
    """Any ``(image, label)`` dataset -> a batched, prefetched pipeline (train or eval variant).

    ```python
    train = image_classification_pipeline(raw_train, True, image_size=32, batch_size=128)
    ```
    `cache`: False, True (memory) or a file path prefix.
    """
    prepared = prepare_images(dataset, image_size, channels)
    if cache:
        prepared = prepared.cache("" if cache is True else os.fspath(cache))
    return finish_pipeline(prepared, training, image_size, batch_size,
                           normalization=normalization, seed=seed, shuffle_buffer=shuffle_buffer)


# ------------------------------------------------------------------- datasets
@dataclasses.dataclass
class ImageClassificationData:
    """A train split and an optional evaluation split, prepared once (and cached when they fit).

    `train_dataset(seed)` and `eval_dataset()` give batched, prefetched pipelines;
    each call returns a new pipeline over the same prepared (cached) images.
    """

    source: str
    num_classes: int
    image_size: Tuple[int, int]
    channels: int
    batch_size: int
    normalization: str
    train_examples: int
    eval_examples: Optional[int]
    train_split: str
    eval_split: Optional[str]
    cached: bool
    class_names: Optional[List[str]] = None
    shuffle_buffer: int = 1024
    _train: object = dataclasses.field(default=None, repr=False)
    _eval: object = dataclasses.field(default=None, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        return int(math.ceil(self.train_examples / self.batch_size))

    @property
    def eval_steps(self) -> Optional[int]:
        if self.eval_examples is None:
            return None
        return int(math.ceil(self.eval_examples / self.batch_size))

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def train_dataset(self, seed: int = 0, augment: bool = True):
        """Shuffled, augmented (random crop + flip), normalised training batches."""
        return finish_pipeline(self._train, True, self.image_size, self.batch_size,
                               normalization=self.normalization, seed=seed,
                               shuffle_buffer=self.shuffle_buffer, augment=augment)

    def eval_dataset(self):
        """Centre-cropped, normalised evaluation batches in order (None without an eval split)."""
        if self._eval is None:
            return None
        return finish_pipeline(self._eval, False, self.image_size, self.batch_size,
                               normalization=self.normalization)

    def warm_cache(self) -> None:
        """Read the cached splits once now (decoding them), so that later partial
        epochs (``dataset.take(steps)``) read from memory. ``cache()`` keeps its
        contents only once a pass has read the whole split; without this, a run
        that never finishes an epoch would decode its images again every time.
        Does nothing when the splits are not cached."""
        import tensorflow as tf

        if not self.cached:
            return
        for ds in (self._train, self._eval):
            if ds is not None:
                ds.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1)

    def describe(self) -> str:
        ev = (f", eval {self.eval_split!r} {self.eval_examples} images"
              if self.eval_split else ", no eval split")
        return (f"{self.source}: train {self.train_split!r} {self.train_examples} images{ev}; "
                f"{self.num_classes} classes; {self.image_size[0]}x{self.image_size[1]}x"
                f"{self.channels}, batch {self.batch_size}, normalisation {self.normalization!r}"
                f"{', cached in memory' if self.cached else ''}")


def _count(dataset) -> int:
    """Number of elements: the known cardinality, else one pass over the (encoded) data."""
    n = int(dataset.cardinality().numpy())
    if n >= 0:
        return n
    return int(dataset.reduce(np.int64(0), lambda c, _: c + 1).numpy())


def _with_cardinality(dataset, n: int):
    tf = _tf()
    if int(dataset.cardinality().numpy()) == n:
        return dataset
    return dataset.apply(tf.data.experimental.assert_cardinality(n))


def _cache_choice(cache, examples: int, image_size, channels: int,
                  cache_limit_bytes: Optional[int]) -> Union[bool, str]:
    if cache not in ("auto", True, False) and not isinstance(cache, (str, os.PathLike)):
        raise ValueError(f"cache must be 'auto', True, False or a file path, got {cache!r}")
    if cache != "auto":
        return cache
    h, w = storage_size(image_size)
    limit = default_cache_limit() if cache_limit_bytes is None else int(cache_limit_bytes)
    return examples * h * w * channels <= limit


@dataclasses.dataclass(frozen=True)
class _Preparation:
    """How raw ``(image, label)`` splits become storage-size uint8 datasets (cached if they fit)."""

    image_size: Tuple[int, int]
    channels: int
    cache: Union[bool, str]  # "auto", True, False or a file path prefix
    cache_limit_bytes: Optional[int] = None

    def prepare(self, raw, examples: int, suffix: str = "") -> Tuple[object, bool]:
        """(prepared dataset of `examples` elements, whether it is cached)."""
        prepared = prepare_images(raw, self.image_size, self.channels)
        choice = _cache_choice(self.cache, examples, self.image_size, self.channels,
                               self.cache_limit_bytes)
        if choice:
            prepared = prepared.cache("" if choice is True else os.fspath(choice) + suffix)
        return _with_cardinality(prepared, examples), bool(choice)

    def splits(self, train: Tuple[object, int], evaluation: Optional[Tuple[object, int]],
               shuffle_buffer: Optional[int]) -> dict:
        """The prepared splits as `ImageClassificationData` fields.

        `train` and `evaluation` are ``(raw dataset, examples)``; `shuffle_buffer`
        defaults to the whole training split when cached, else 2048 images.
        """
        raw_train, n_train = train
        prepared_train, cached = self.prepare(raw_train, n_train, ".train")
        prepared_eval, n_eval = None, None
        if evaluation is not None:
            raw_eval, n_eval = evaluation
            prepared_eval, _ = self.prepare(raw_eval, n_eval, ".eval")
        if shuffle_buffer is None:
            shuffle_buffer = n_train if cached else min(n_train, 2048)
        return dict(image_size=self.image_size, channels=self.channels, train_examples=n_train,
                    eval_examples=n_eval, cached=cached, shuffle_buffer=int(shuffle_buffer),
                    _train=prepared_train, _eval=prepared_eval)


def _image_feature_shape(info) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    image_key = info.supervised_keys[0] if info.supervised_keys else "image"
    shape = tuple(info.features[image_key].shape)
    return (shape + (None, None, None))[:3]


def _split_examples(info, split: str) -> Optional[int]:
    try:
        return int(info.splits[split].num_examples)
    except Exception:  # unknown split name, mock data without split metadata
        return None


def _default_eval_split(info, train_split: str) -> Optional[str]:
    known = list(getattr(info, "splits", {}) or {})
    if not known:  # no split metadata (e.g. tfds mock data): the usual name
        return "test"
    for name in EVAL_SPLITS:
        if name in known and not train_split.startswith(name):
            return name
    return None


def from_tfds(
    name: str,
    split: Optional[str] = None,
    eval_split: Optional[str] = "auto",
    image_size: Optional[Size] = None,
    batch_size: int = 64,
    channels: Optional[int] = None,
    normalization: str = "unit",
    data_dir: Optional[str] = None,
    download: bool = True,
    cache: Union[str, bool] = "auto",
    cache_limit_bytes: Optional[int] = None,
    shuffle_buffer: Optional[int] = None,
    seed: int = 0,
) -> ImageClassificationData:
    """An image classification dataset from TensorFlow Datasets, ready for `fit`.

    Args:
      name: a tfds name, optionally with ``:split`` (``"cifar10"``, ``"imagenette/320px-v2"``,
        ``"cifar10:train[:90%]"``).
      split: the training split (default: from `name`, else ``"train"``).
      eval_split: ``"auto"`` (``test``, else ``validation``, if the dataset has one),
        a split, or None for no evaluation data.
      image_size: int or (height, width); default: the dataset's image size if fixed,
        else 224.
      batch_size: batch size of both pipelines.
      channels: 1 or 3 to convert to (default: the dataset's).
      normalization: one of `NORMALIZATIONS`.
      data_dir, download: passed to ``tfds.load``.
      cache: ``"auto"`` (memory if the storage-size images fit in `cache_limit_bytes`,
        default `default_cache_limit()`), True, False, or a file path prefix.
      shuffle_buffer: default: the whole split when cached, else 2048 images.
      seed: seed of file shuffling (the pipelines take their own seed).
    """
    tfds = _import_tfds()
    base, spec_split = parse_dataset_spec(name)
    split = split or spec_split or "train"
    builder = _tfds_builder(tfds, base, data_dir, download)
    info = builder.info
    h, w, c = _image_feature_shape(info)
    if image_size is None:
        image_size = (h, w) if h and w else DEFAULT_IMAGE_SIZE
    preparation = _Preparation(_size2(image_size), int(channels or c or 3), cache,
                               cache_limit_bytes)
    label_feature = info.features[info.supervised_keys[1]]
    if eval_split == "auto":
        eval_split = _default_eval_split(info, split)
    read_config = tfds.ReadConfig(shuffle_seed=int(seed))

    def load(which, training):
        ds = builder.as_dataset(split=which, as_supervised=True, shuffle_files=training,
                                read_config=read_config)
        n = _split_examples(info, which)
        return ds, (n if n is not None else _count(ds))

    train = load(split, True)
    if train[1] == 0:
        raise ValueError(f"tfds split {base}:{split} is empty")
    return ImageClassificationData(
        source=f"tfds:{base}", num_classes=int(label_feature.num_classes),
        batch_size=int(batch_size), normalization=_check_normalization(normalization),
        train_split=split, eval_split=eval_split,
        class_names=list(getattr(label_feature, "names", []) or []) or None,
        **preparation.splits(train, load(eval_split, False) if eval_split else None,
                             shuffle_buffer))


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # an optional dependency
        raise ImportError("tfds datasets need the tensorflow-datasets package: "
                          "pip install 'tfmot-wfn[data]' (or pip install tensorflow-datasets)"
                          ) from error
    return tfds


def _tfds_builder(tfds, base: str, data_dir: Optional[str], download: bool):
    """The dataset's builder (prepared if `download`); refuses one without (image, label) keys."""
    builder = tfds.builder(base, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    if not builder.info.supervised_keys:
        raise ValueError(f"tfds dataset {base!r} has no (image, label) supervised keys; it is "
                         "not an image classification dataset")
    return builder


def _class_folders(directory: str) -> List[str]:
    return sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d))
                  and not d.startswith("."))


#: The image files ``keras.utils.image_dataset_from_directory`` reads.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def _quiet(verbose: bool):
    """Silences stdout unless ``verbose``."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def _check_split_sizes(directory: str, validation_split: float) -> None:
    """Refuse a split that leaves no file on one side (Keras then says "No training images
    found", hiding the cause)."""
    files = sum(1 for _, _, names in os.walk(directory) for name in names
                if name.lower().endswith(IMAGE_SUFFIXES))
    held_out = int(validation_split * files)
    if files and not 0 < held_out < files:
        raise ValueError(
            f"{directory} holds {files} images: a validation split of {validation_split:g} keeps "
            f"{held_out} of them for evaluation and {files - held_out} for training. Add images, "
            "change --validation-split, or pass 0 for no evaluation data")


def _read_in_file_order(paths, directory: str, class_names, channels: int, size):
    """``(image, label)`` of `paths` in that order every pass, read as Keras's
    ``image_dataset_from_directory(crop_to_aspect_ratio=True)`` reads them.

    Keras's split dataset reshuffles its training files at every pass, so two pipelines
    over it (a fix job and its resume) would see different orders even with the same seed;
    `finish_pipeline` does the seeded shuffling.
    """
    from tfmot_wfn.keras.compat import keras

    tf = _tf()
    labels = [class_names.index(os.path.relpath(p, directory).split(os.sep)[0]) for p in paths]
    height, width = size

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                   expand_animations=False)
        image = keras.preprocessing.image.smart_resize(image, (height, width))
        image.set_shape((height, width, channels))
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int32)))
    return dataset.map(load, num_parallel_calls=AUTOTUNE)


def from_directory(
    directory: str,
    image_size: Optional[Size] = None,
    batch_size: int = 64,
    validation_split: Optional[float] = 0.2,
    channels: int = 3,
    normalization: str = "unit",
    cache: Union[str, bool] = "auto",
    cache_limit_bytes: Optional[int] = None,
    shuffle_buffer: Optional[int] = None,
    seed: int = 0,
    verbose: bool = False,
) -> ImageClassificationData:
    """Images in class sub-folders (``DIR/cat/1.jpg, DIR/dog/2.png``), via
    ``keras.utils.image_dataset_from_directory``.

    If `directory` holds ``train/`` and one of ``val/``, ``validation/``, ``valid/``,
    ``test/`` (each with class sub-folders), those are the splits; otherwise a
    seeded `validation_split` of the files (None or 0: no evaluation data).
    """
    from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, keras

    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such directory: {directory}")
    image_size = _size2(image_size if image_size is not None else DEFAULT_IMAGE_SIZE)
    if channels not in (1, 3, 4):
        raise ValueError(f"channels must be 1, 3 or 4, got {channels!r}")
    color_mode = {1: "grayscale", 3: "rgb", 4: "rgba"}[channels]
    stored = storage_size(image_size)
    common = dict(labels="inferred", label_mode="int", color_mode=color_mode, batch_size=None,
                  image_size=stored, crop_to_aspect_ratio=True)
    if not IS_LEGACY_KERAS:  # tf_keras's has no verbose (it prints: _quiet silences that)
        common["verbose"] = verbose
    sub = _class_folders(directory)
    eval_dir = next((d for d in DIRECTORY_EVAL_FOLDERS if d in sub), None)
    if "train" in sub and eval_dir is not None:
        with _quiet(verbose):
            raw_train = keras.utils.image_dataset_from_directory(
                os.path.join(directory, "train"), shuffle=False, **common)
            class_names = list(raw_train.class_names)
            raw_eval = keras.utils.image_dataset_from_directory(
                os.path.join(directory, eval_dir), shuffle=False, class_names=class_names,
                **common)
        train_split, eval_split = "train", eval_dir
    elif validation_split:
        _check_split_sizes(directory, float(validation_split))
        with _quiet(verbose):  # Keras prints "Using N files for training." whatever verbose says
            raw_train, raw_eval = keras.utils.image_dataset_from_directory(
                directory, shuffle=True, seed=int(seed), validation_split=float(validation_split),
                subset="both", **common)
        class_names = list(raw_train.class_names)
        raw_train = _read_in_file_order(raw_train.file_paths, directory, class_names, channels,
                                        stored)
        train_split = f"{1 - validation_split:.0%} of the files"
        eval_split = f"{validation_split:.0%} of the files"
    else:
        with _quiet(verbose):
            raw_train = keras.utils.image_dataset_from_directory(directory, shuffle=False,
                                                                 **common)
        class_names, raw_eval, train_split, eval_split = list(raw_train.class_names), None, "all", None
    if len(class_names) < 2:
        raise ValueError(f"{directory} needs at least two class sub-folders, found {class_names}")
    preparation = _Preparation(image_size, channels, cache, cache_limit_bytes)
    evaluation = None if raw_eval is None else (raw_eval, _count(raw_eval))
    return ImageClassificationData(
        source=f"dir:{directory}", num_classes=len(class_names), batch_size=int(batch_size),
        normalization=_check_normalization(normalization), train_split=train_split,
        eval_split=eval_split, class_names=class_names,
        **preparation.splits((raw_train, _count(raw_train)), evaluation, shuffle_buffer))


def _check_arrays(x, y, what: str) -> Tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:  # (N, H, W): one channel
        x = x[..., None]
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"{what} images must be uint8 (N, height, width, channels) as stored "
                         f"(0..255), got {x.dtype} {x.shape}; convert float images in [0, 1] "
                         "with (x * 255).round().astype('uint8')")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} labels must be integer class ids of shape ({len(x)},), "
                         f"got {y.dtype} {y.shape}")
    if len(x) == 0:
        raise ValueError(f"{what} split is empty")
    return x, y.astype(np.int64)


def from_arrays(
    x,
    y,
    eval_data: Optional[Tuple[object, object]] = None,
    image_size: Optional[Size] = None,
    batch_size: int = 64,
    normalization: str = "unit",
    num_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    shuffle_buffer: Optional[int] = None,
    source: str = "arrays",
) -> ImageClassificationData:
    """In-memory uint8 images and integer labels (e.g. from an ``.npz``), ready for `fit`.

    The same pipelines as `from_tfds` and `from_directory`: training batches are
    shuffled, randomly cropped and flipped (seeded), evaluation batches centre-cropped
    and in order, both normalised.

    ```python
    with np.load("cifar10_part.npz") as f:
        x, y = f["x"], f["y"]
    photos = data.from_arrays(x[:4000], y[:4000], (x[4000:], y[4000:]), batch_size=128)
    ```

    Args:
      x, y: training images, uint8 ``(N, height, width, channels)`` (or ``(N, height,
        width)``), and their integer labels ``(N,)``.
      eval_data: ``(x, y)`` of the evaluation split in the same form, or None.
      image_size: int or (height, width); default: the arrays' image size.
      batch_size, normalization, shuffle_buffer: as in `from_tfds`.
      num_classes: default: the largest label + 1 (or ``len(class_names)``).
      class_names: optional names of the classes.
      source: what `describe()` calls the data (e.g. the file they came from).
    """
    tf = _tf()
    x, y = _check_arrays(x, y, "training")
    splits = [(x, y)]
    if eval_data is not None:
        splits.append(_check_arrays(*eval_data, "evaluation"))
        if splits[1][0].shape[1:] != x.shape[1:]:
            raise ValueError(f"evaluation images are {splits[1][0].shape[1:]}, training images "
                             f"{x.shape[1:]}: give both splits the same image shape")
    if num_classes is None:
        num_classes = len(class_names) if class_names else 1 + max(int(s[1].max()) for s in splits)
    if any(s[1].min() < 0 or s[1].max() >= num_classes for s in splits):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes})")
    preparation = _Preparation(_size2(image_size if image_size is not None else x.shape[1:3]),
                               int(x.shape[-1]), cache=True)
    raw = [(tf.data.Dataset.from_tensor_slices(s), len(s[1])) for s in splits]
    return ImageClassificationData(
        source=source, num_classes=int(num_classes), batch_size=int(batch_size),
        normalization=_check_normalization(normalization), train_split="train",
        eval_split="eval" if eval_data is not None else None,
        class_names=list(class_names) if class_names else None,
        **preparation.splits(raw[0], raw[1] if eval_data is not None else None, shuffle_buffer))
