"""tfmot_wfn.apps.data: tf.data pipelines from tfds (offline, with tfds mock data) and image folders."""

from __future__ import annotations

import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from tfmot_wfn.apps import data  # noqa: E402

pytestmark = pytest.mark.legacy  # also run under tf_keras: see pytest.ini


def _labels(ds):
    return np.concatenate([y.numpy() for _, y in ds])


def _images(ds):
    return np.concatenate([x.numpy() for x, _ in ds])


@pytest.fixture(scope="module")
def cifar():
    with tfds.testing.mock_data(num_examples=40):
        return data.from_tfds("cifar10", batch_size=16)


def test_parse_dataset_spec():
    assert data.parse_dataset_spec("cifar10") == ("cifar10", None)
    assert data.parse_dataset_spec("cifar10:train[:90%]") == ("cifar10", "train[:90%]")
    assert data.parse_dataset_spec("imagenette/320px-v2:validation") == (
        "imagenette/320px-v2", "validation")
    for bad in ("", ":train", None):
        with pytest.raises(ValueError, match="NAME"):
            data.parse_dataset_spec(bad)


def test_storage_size_small_images_stay_large_images_get_a_crop_margin():
    assert data.storage_size(32) == (32, 32)
    assert data.storage_size((28, 20)) == (28, 20)
    assert data.storage_size(224) == (256, 256)
    assert data.storage_size((160, 128)) == (183, 147)
    with pytest.raises(ValueError, match="image_size"):
        data.storage_size(0)
    with pytest.raises(ValueError, match="image_size"):
        data.storage_size("big")


def test_tfds_cifar10_train_and_eval_pipelines(cifar):
    assert (cifar.num_classes, cifar.image_size, cifar.channels) == (10, (32, 32), 3)
    assert cifar.train_split == "train" and cifar.eval_split == "test"
    assert cifar.train_examples == 40 and cifar.eval_examples == 40
    assert cifar.cached and cifar.steps_per_epoch == 3 and cifar.eval_steps == 3
    assert "cached in memory" in cifar.describe()
    train = cifar.train_dataset(seed=0)
    assert int(train.cardinality().numpy()) == cifar.steps_per_epoch
    x, y = next(iter(train))
    assert x.shape == (16, 32, 32, 3) and x.dtype.name == "float32" and y.dtype.name == "int64"
    images = _images(train)
    assert images.shape[0] == 40 and 0.0 <= images.min() and images.max() <= 1.0
    # Evaluation: every example once, in the same order on every pass.
    ev = cifar.eval_dataset()
    np.testing.assert_array_equal(_images(ev), _images(cifar.eval_dataset()))
    assert _labels(ev).shape == (40,)


def test_training_order_and_augmentation_follow_the_seed(cifar):
    first = cifar.train_dataset(seed=3)
    a = [(x.numpy(), y.numpy()) for x, y in first]
    b = [(x.numpy(), y.numpy()) for x, y in cifar.train_dataset(seed=3)]
    for (xa, ya), (xb, yb) in zip(a, b):  # a new pipeline with the same seed: same batches
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other = np.concatenate([y.numpy() for _, y in cifar.train_dataset(seed=4)])
    assert not np.array_equal(np.concatenate([y for _, y in a]), other)
    second_epoch = np.concatenate([y.numpy() for _, y in first])  # a new order each epoch
    assert not np.array_equal(np.concatenate([y for _, y in a]), second_epoch)
    # Without augmentation the training images are the evaluation images (shuffled).
    plain = _images(cifar.train_dataset(seed=3, augment=False))
    ev = _images(cifar.eval_dataset())
    assert sorted(map(float, plain.sum(axis=(1, 2, 3)))) == pytest.approx(
        sorted(map(float, ev.sum(axis=(1, 2, 3)))), rel=1e-5)


def test_warm_cache_reads_each_split_once(monkeypatch):
    import tensorflow as tf

    reads = tf.Variable(0, dtype=tf.int64)

    def counted(image, label):
        reads.assign_add(1)
        return image, label

    raw = tf.data.Dataset.from_tensor_slices(
        (np.zeros((12, 8, 8, 3), np.uint8), np.arange(12) % 2)).map(counted)
    prepared, cached = data._Preparation((8, 8), 3, cache=True).prepare(raw, 12)
    folder = data.ImageClassificationData(
        source="test", num_classes=2, image_size=(8, 8), channels=3, batch_size=4,
        normalization="unit", train_examples=12, eval_examples=None, train_split="train",
        eval_split=None, cached=cached, _train=prepared)
    folder.warm_cache()
    assert int(reads.numpy()) == 12
    for seed in range(3):  # partial epochs now read from memory
        list(folder.train_dataset(seed=seed).take(1))
    assert int(reads.numpy()) == 12


def test_channels_resize_and_normalizations():
    with tfds.testing.mock_data(num_examples=8):
        mnist = data.from_tfds("mnist:train[:50%]", image_size=16, channels=3, batch_size=4,
                               normalization="symmetric", eval_split=None)
    assert mnist.train_split == "train[:50%]" and mnist.eval_dataset() is None
    x = _images(mnist.train_dataset())
    assert x.shape == (8, 16, 16, 3) and -1.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # grayscale -> RGB copies the channel
    with tfds.testing.mock_data(num_examples=6):  # variable-size images, ImageNet recipe
        nette = data.from_tfds("imagenette", image_size=96, batch_size=3, normalization="imagenet",
                               cache=False)
    assert not nette.cached and nette.image_size == (96, 96)
    assert _images(nette.train_dataset()).shape == (6, 96, 96, 3)
    ev = _images(nette.eval_dataset())
    assert ev.shape == (6, 96, 96, 3) and ev.min() < 0.0  # mean/std normalised
    with tfds.testing.mock_data(num_examples=4):
        raw = data.from_tfds("cifar10", batch_size=4, normalization="none", cache_limit_bytes=1)
    assert not raw.cached
    assert _images(raw.eval_dataset()).max() > 1.0
    with pytest.raises(ValueError, match="normalization"):
        data.normalize(np.zeros((2, 2, 3), np.uint8), "zscore")


def test_generic_pipeline_on_any_image_label_dataset():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 20, 30, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    raw = tf.data.Dataset.from_tensor_slices((images, labels))
    train = data.image_classification_pipeline(raw, True, image_size=12, batch_size=4, cache=True)
    ev = data.image_classification_pipeline(raw, False, image_size=12, batch_size=4)
    assert _images(train).shape == (10, 12, 12, 3)
    np.testing.assert_array_equal(_labels(ev), labels)


def _write_pngs(root, classes=("a", "b", "c"), per_class=4, size=10, channels=1, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 256, size=(size, size + 2, channels), dtype=np.uint8)
            tf.io.write_file(os.path.join(root, name, f"{i}.png"), tf.io.encode_png(image))


def test_directory_with_train_and_val_folders(tmp_path):
    _write_pngs(str(tmp_path / "train"), per_class=5)
    _write_pngs(str(tmp_path / "val"), per_class=2, seed=1)
    folder = data.from_directory(str(tmp_path), image_size=8, batch_size=4, channels=1)
    assert folder.class_names == ["a", "b", "c"] and folder.num_classes == 3
    assert (folder.train_split, folder.eval_split) == ("train", "val")
    assert (folder.train_examples, folder.eval_examples) == (15, 6)
    assert folder.steps_per_epoch == 4 and folder.input_shape == (8, 8, 1)
    assert _images(folder.train_dataset()).shape == (15, 8, 8, 1)
    np.testing.assert_array_equal(_labels(folder.eval_dataset()), [0, 0, 1, 1, 2, 2])


def test_directory_with_a_validation_split(tmp_path, capsys):
    _write_pngs(str(tmp_path), per_class=10, channels=3)
    capsys.readouterr()
    folder = data.from_directory(str(tmp_path), image_size=6, batch_size=8, validation_split=0.2,
                                 seed=0)
    assert capsys.readouterr().out == ""  # Keras's "Using 24 files for training." (verbose=False)
    assert folder.train_examples == 24 and folder.eval_examples == 6
    assert _images(folder.eval_dataset()).shape == (6, 6, 6, 3)
    none = data.from_directory(str(tmp_path), image_size=6, validation_split=None)
    assert none.eval_dataset() is None and none.train_examples == 30


def test_an_uncached_validation_split_reads_its_files_in_one_order_every_pass(tmp_path):
    """Keras's split reshuffles its training files every pass; the fix job's resume needs a
    pipeline that gives the same batches for the same seed, also when nothing is cached."""
    import tensorflow as tf

    from tfmot_wfn.keras.compat import keras

    _write_pngs(str(tmp_path), per_class=10, channels=3, size=9)
    folder = data.from_directory(str(tmp_path), image_size=6, batch_size=8, validation_split=0.2,
                                 seed=0, cache=False)
    assert not folder.cached
    runs = [folder.train_dataset(seed=3, augment=False) for _ in range(3)]
    labels, images = [_labels(r) for r in runs], [_images(r) for r in runs]
    for i in (1, 2):
        np.testing.assert_array_equal(labels[i], labels[0])
        np.testing.assert_array_equal(images[i], images[0])
    # The same files and pixels as Keras's own reading of the split.
    keras_train, _ = keras.utils.image_dataset_from_directory(
        str(tmp_path), shuffle=True, seed=0, validation_split=0.2, subset="both", batch_size=None,
        image_size=data.storage_size(6), crop_to_aspect_ratio=True)
    theirs = sorted(np.round(x.numpy()).astype(np.uint8).tobytes() + bytes([int(y)])
                    for x, y in keras_train)
    ours = sorted(x.numpy().tobytes() + bytes([int(y)]) for x, y in folder._train)
    assert len(ours) == 24 and ours == theirs
    assert isinstance(folder._train, tf.data.Dataset)


def test_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.from_directory(str(tmp_path / "missing"))
    _write_pngs(str(tmp_path / "one"), classes=("only",))
    with pytest.raises(ValueError, match="two class"):
        data.from_directory(str(tmp_path / "one"), image_size=8, validation_split=None)
    with pytest.raises(ValueError, match="channels"):
        data.from_directory(str(tmp_path / "one"), channels=2)
    # Too few images for the split: said so (Keras would say "No training images found").
    _write_pngs(str(tmp_path / "few"), classes=("a", "b"), per_class=2)
    with pytest.raises(ValueError, match="holds 4 images: a validation split of 0.2 keeps 0"):
        data.from_directory(str(tmp_path / "few"), image_size=8, validation_split=0.2)


def test_imagenet_normalization_leaves_an_alpha_channel_in_unit_range():
    x = np.full((1, 2, 2, 4), 255, np.uint8)
    rgba = np.asarray(data.normalize(x, "imagenet"))
    np.testing.assert_allclose(rgba[..., :3], np.asarray(data.normalize(x[..., :3], "imagenet")))
    np.testing.assert_allclose(rgba[..., 3], 1.0)


def test_arrays_give_the_same_pipelines_as_tfds():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    y = np.arange(20) % 4
    x_eval, y_eval = x[:6], y[:6]
    photos = data.from_arrays(x, y, (x_eval, y_eval), batch_size=8, source="npz:photos.npz")
    assert (photos.num_classes, photos.image_size, photos.channels) == (4, (32, 32), 3)
    assert (photos.train_examples, photos.eval_examples, photos.steps_per_epoch) == (20, 6, 3)
    assert photos.cached and photos.describe().startswith("npz:photos.npz: train 'train' 20 images")
    # Evaluation: the images in order, normalised to [0, 1], unchanged (centre crop of 32 = all).
    ev = photos.eval_dataset()
    np.testing.assert_allclose(_images(ev), x_eval / 255.0, atol=1e-6)
    np.testing.assert_array_equal(_labels(ev), y_eval)
    # Training: shuffled and augmented (random crop + flip), reproducible by seed.
    a, b = _images(photos.train_dataset(seed=1)), _images(photos.train_dataset(seed=1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20, 32, 32, 3) and not np.allclose(np.sort(a.sum(axis=(1, 2, 3))),
                                                         np.sort(x.sum(axis=(1, 2, 3)) / 255.0))
    plain = _images(photos.train_dataset(seed=1, augment=False))
    assert sorted(plain.sum(axis=(1, 2, 3))) == pytest.approx(
        sorted(x.sum(axis=(1, 2, 3)) / 255.0), rel=1e-5)
    assert sorted(_labels(photos.train_dataset(seed=2))) == sorted(y)
    gray = data.from_arrays(x[..., 0], y, num_classes=10)
    assert (gray.channels, gray.num_classes, gray.eval_dataset()) == (1, 10, None)


def test_array_errors_say_what_to_pass():
    x = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        data.from_arrays(x.astype(np.float32), np.zeros(4, int))
    with pytest.raises(ValueError, match="integer class ids"):
        data.from_arrays(x, np.zeros(3, int))
    with pytest.raises(ValueError, match="same image shape"):
        data.from_arrays(x, np.zeros(4, int), (np.zeros((2, 9, 9, 3), np.uint8), np.zeros(2, int)))
    with pytest.raises(ValueError, match="0..1"):
        data.from_arrays(x, np.array([0, 1, 2, 0]), num_classes=2)
