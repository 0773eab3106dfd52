"""The tfmot peers, run in a SUBPROCESS with ``TF_USE_LEGACY_KERAS=1`` (tfmot needs tf_keras).

`benchmarks/run.py` starts this script with one JSON spec; it prints one line
``RESULT {json}``. Never import this module (or tfmot) in the Keras 3 process:
importing tensorflow_model_optimization switches TensorFlow to legacy Keras.

Both modes read the images from ``spec["data_in"]``, an ``.npz`` the main process wrote
(`run.save_data`), so that the peer trains and tests on exactly the images of the row it
is compared with (rebuilding the split here once drew another seed's split, whose
training images held the main process's test images).

Modes:

* ``cluster``: rebuild the model in tf_keras, load the float weights trained by
  the main process, wrap every Conv/DepthwiseConv/Dense layer in
  ``tfmot.clustering.keras.cluster_weights`` through ``clone_model`` (as tfmot's
  clustering guide does), fine-tune, ``strip_clustering``, save the weights.
* ``step_time``: median training-step time of the plain model and of the same model
  with ``prune_low_magnitude`` on its Conv/Dense layers (``UpdatePruningStep``),
  alternating step by step in one process (`step_timing.alternating_step_times`).
"""

from __future__ import annotations

import json
import os
import sys
import time

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise SystemExit("run with TF_USE_LEGACY_KERAS=1 (tfmot works with tf_keras only)")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402,F401
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

import models  # noqa: E402
import step_timing  # noqa: E402


def _compile(model, lr: float, clipnorm: float) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr, clipnorm=clipnorm),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def load_data(spec):
    """``(x_train, x_test, y_train, y_test)`` from ``spec["data_in"]`` (`run.save_data`)."""
    if "data_in" not in spec:
        raise SystemExit("spec needs 'data_in': the .npz of run.save_data (the main process's images)")
    with np.load(spec["data_in"]) as f:
        return f["x_train"], f["x_test"], f["y_train"], f["y_test"]


def _accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), -1) == y))


def cluster(spec) -> dict:
    name = spec["model"]
    m = models.MODELS[name]
    x_train, x_test, y_train, y_test = load_data(spec)
    keras.utils.set_random_seed(spec["seed"])
    base = models.build(name, keras)
    models.load_layer_weights(base, spec["weights_in"])
    float_accuracy = _accuracy(base, x_test, y_test)  # checks the weight transfer

    cluster_weights = tfmot.clustering.keras.cluster_weights
    init = tfmot.clustering.keras.CentroidInitialization
    params = {"number_of_clusters": int(spec["clusters"]),
              "cluster_centroids_init": getattr(init, spec.get("init", "KMEANS_PLUS_PLUS"))}

    def apply_clustering(layer):
        if models.is_kernel_layer(layer, keras):
            return cluster_weights(layer, **params)
        return layer

    start = time.perf_counter()
    clustered = keras.models.clone_model(base, clone_function=apply_clustering)
    setup_seconds = time.perf_counter() - start
    _compile(clustered, spec["lr"], spec["clipnorm"])
    start = time.perf_counter()
    if m.get("augment"):  # as the Keras 3 process fine-tunes (`run.fine_tune_inputs`)
        clustered.fit(models.augmented_dataset(x_train, y_train, m["batch"], spec["seed"]),
                      epochs=spec["epochs"], verbose=0)
    else:
        clustered.fit(x_train, y_train, batch_size=m["batch"], epochs=spec["epochs"], verbose=0,
                      shuffle=True)
    fit_seconds = time.perf_counter() - start
    final = tfmot.clustering.keras.strip_clustering(clustered)
    accuracy = _accuracy(final, x_test, y_test)
    models.save_layer_weights(final, spec["weights_out"])
    # tfmot 0.8's ClusteringRegistry has no clusterable weight for some layers it accepts
    # (DepthwiseConv2D): their kernels come back unclustered. Name them in the report.
    unclustered = []
    for layer in final.layers:
        if models.is_kernel_layer(layer, keras):
            kernel = layer.get_weights()[0]
            if np.unique(kernel).size > int(spec["clusters"]):
                unclustered.append([layer.name, type(layer).__name__, int(kernel.size)])
    return {"unclustered_layers": unclustered, "train_images": int(len(x_train)),
            "float_accuracy_tf_keras": float_accuracy, "accuracy_tf_keras": accuracy,
            "fit_seconds": fit_seconds, "setup_seconds": setup_seconds,
            "clustered_layers": sum(1 for l in base.layers if models.is_kernel_layer(l, keras))}


def step_time(spec) -> dict:
    name = spec["model"]
    x_train, _, y_train, _ = load_data(spec)
    keras.utils.set_random_seed(spec["seed"])

    def plain():
        model = models.build(name, keras)
        models.load_layer_weights(model, spec["weights_in"])
        _compile(model, spec["lr"], spec["clipnorm"])
        return model, []

    def pruned():
        base = models.build(name, keras)
        models.load_layer_weights(base, spec["weights_in"])
        schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=100)

        def apply_pruning(layer):
            if models.is_kernel_layer(layer, keras):
                return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
            return layer

        model = keras.models.clone_model(base, clone_function=apply_pruning)
        _compile(model, spec["lr"], spec["clipnorm"])
        return model, [tfmot.sparsity.keras.UpdatePruningStep()]

    times = step_timing.alternating_step_times(
        {"plain": plain, "prune_low_magnitude": pruned}, x_train, y_train,
        batch=spec["batch"], steps=spec["steps"], blocks=spec["blocks"], base="plain")
    return {"step_times": times, "tf_keras_version": keras.__version__,
            "tfmot_version": getattr(tfmot, "__version__", "?")}


def main() -> int:
    spec = json.loads(sys.argv[1])
    result = {"cluster": cluster, "step_time": step_time}[spec["mode"]](spec)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
