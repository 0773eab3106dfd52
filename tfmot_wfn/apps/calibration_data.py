"""Representative (calibration) data for ``tfmot-wfn export --format int8``.

From a ``.npy``/``.npz`` file of inputs as fed to the model, or from the same
sources as ``tfmot-wfn fix``: a TensorFlow Datasets name or an image folder
(images prepared as for fixing: the model's input size and channels, the given
normalization, no augmentation).

```python
x = representative_data(model, path="calibration.npy")
x = representative_data(model, dataset="cifar10", normalization="unit")
```
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

#: Keys tried, in order, in an ``.npz`` file holding several arrays.
NPZ_KEYS = ("x", "x_train", "inputs", "images", "x_test")


def load_array_file(path: str) -> np.ndarray:
    """The input array of a ``.npy`` file, or of a ``.npz`` file (its only array, or ``x``...)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no representative data file at {path!r}")
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        keys = list(loaded.keys())
        key = keys[0] if len(keys) == 1 else next((k for k in NPZ_KEYS if k in keys), None)
        if key is None:
            raise ValueError(f"{path} holds arrays {keys}; name the inputs one of {NPZ_KEYS} "
                             "or save a single array")
        return loaded[key]


def representative_data(model, path: Optional[str] = None, dataset: Optional[str] = None,
                        data_dir: Optional[str] = None, normalization: str = "unit"):
    """Inputs for `tfmot_wfn.lite.export_tflite` ``representative_data`` from one source.

    Returns an array (``path``) or a tf.data pipeline of ``(images, labels)`` batches
    (``dataset`` / ``data_dir``), which the export reads only as far as it needs.
    """
    if sum(x is not None for x in (path, dataset, data_dir)) != 1:
        raise ValueError("give exactly one of a .npy/.npz file, --dataset or --data-dir")
    if path is not None:
        return load_array_file(path)
    from tfmot_wfn.apps import data

    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(f"--dataset/--data-dir feed images; the model's input has shape {shape}:"
                         " pass a .npy/.npz file of its inputs instead")
    size = (int(shape[1]), int(shape[2])) if shape[1] and shape[2] else None
    channels = int(shape[3]) if shape[3] else 3
    if dataset is not None:
        source = data.from_tfds(dataset, eval_split=None, image_size=size, batch_size=32,
                                channels=channels, normalization=normalization, cache=False)
    else:
        source = data.from_directory(data_dir, image_size=size, batch_size=32,
                                     validation_split=None, channels=channels,
                                     normalization=normalization, cache=False)
    return source.train_dataset(seed=0, augment=False)


__all__ = ["NPZ_KEYS", "load_array_file", "representative_data"]
