"""The one place where the Keras implementation is chosen.

Keras 3 (``import keras``) is the default. Setting ``TF_USE_LEGACY_KERAS=1``
before import selects legacy Keras 2 (``tf_keras``), the convention TensorFlow
and tfmot follow. Every other module imports ``keras`` from here.
"""

from __future__ import annotations

import os

import tensorflow as tf  # noqa: F401  (TensorFlow is the only supported backend)


def _legacy_requested() -> bool:
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


IS_LEGACY_KERAS = _legacy_requested()

if IS_LEGACY_KERAS:  # pragma: no cover - exercised by the legacy CI job
    import tf_keras as keras  # type: ignore
else:
    import keras  # type: ignore

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            "tfmot_wfn needs the TensorFlow backend of Keras, but KERAS_BACKEND is "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before importing."
        )

__all__ = ["IS_LEGACY_KERAS", "keras", "tf"]
