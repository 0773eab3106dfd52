"""Model builders and state readers shared by the Keras tests (imported via conftest's sys.path)."""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional

import numpy as np

from tfmot_wfn.keras.compat import keras
import tfmot_wfn
from tfmot_wfn.core.powers_of_two import signed_digits
from tfmot_wfn.keras.network import wrappers_of

L = keras.layers


# ----------------------------------------------------------------------- data
@dataclasses.dataclass
class Digits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_data() -> Digits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int64")
    return Digits(x[:1437], y[:1437], x[1437:], y[1437:])


def classification_data(n=64, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=n).astype("int64")
    return x, y


# --------------------------------------------------------------------- models
#: compile() arguments of the three ways Keras runs a train step. XLA drops Assert
#: ops (and Keras turns jit_compile on by itself on a GPU).
RUN_MODES = {"graph": {}, "eager": {"run_eagerly": True}, "xla": {"jit_compile": True}}


def dense_model(features=8, hidden=16, classes=3, batchnorm=False, seed=0, name=None):
    """A tiny Sequential MLP with deterministic weights (logits output)."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((features,)), L.Dense(hidden)]
    if batchnorm:
        layers.append(L.BatchNormalization())
    layers += [L.ReLU(), L.Dense(classes)]
    return keras.Sequential(layers, name=name)


def digits_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    h = L.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(h)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    h = L.GlobalAveragePooling2D()(h)
    out = L.Dense(10, activation="softmax")(h)
    return keras.Model(inp, out, name="digits_cnn")


def compile_classifier(model, optimizer=None, from_logits=False):
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )
    return model


def accuracy(model, x, y) -> float:
    p = model.predict(x, verbose=0, batch_size=512)
    return float(np.mean(np.argmax(p, axis=-1) == y))


@dataclasses.dataclass
class FloatCNN:
    model: keras.Model
    accuracy: float
    weights: List[np.ndarray]
    predictions: np.ndarray
    layer_ids: List[int]
    layer_names: List[str]
    layer_classes: List[type]
    layer_configs: List[dict]


def snapshot_float(model, x) -> dict:
    return dict(
        weights=[w.copy() for w in model.get_weights()],
        predictions=model.predict(x, verbose=0, batch_size=512),
        layer_ids=[id(layer) for layer in model.layers],
        layer_names=[layer.name for layer in model.layers],
        layer_classes=[type(layer) for layer in model.layers],
        layer_configs=[layer.get_config() for layer in model.layers],
    )


def train_float_cnn(data: Digits, epochs=15) -> FloatCNN:
    model = compile_classifier(digits_cnn(), keras.optimizers.Adam(3e-3))
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0)
    return FloatCNN(model=model, accuracy=accuracy(model, data.x_test, data.y_test),
                    **snapshot_float(model, data.x_test))


# --------------------------------------------------------------- fixing state
def flat_masks(model) -> np.ndarray:
    return np.concatenate([m.ravel() for w in wrappers_of(model) for m in w.mask_numpy()])


def flat_values(model) -> np.ndarray:
    return np.concatenate([a.ravel() for w in wrappers_of(model) for a in w.effective_numpy()])


def flat_fixed_values(model) -> np.ndarray:
    """The wrappers' `fixed_values` variables (not the effective weights)."""
    return np.concatenate([f.numpy().ravel() for w in wrappers_of(model) for f in w.fixed_values])


def wrapper_palette(wrapper) -> np.ndarray:
    return wrapper.palette.numpy()[: int(wrapper.palette_size.numpy())]


def network_state(model) -> list:
    """Everything a wrapper stores, per wrapper, as numpy."""
    out = []
    for w in wrappers_of(model):
        out.append(dict(
            name=w.name,
            masks=w.mask_numpy(),
            fixed_values=[f.numpy() for f in w.fixed_values],
            effective=w.effective_numpy(),
            palette=w.palette.numpy(),
            palette_size=int(w.palette_size.numpy()),
            fixing_step=int(w.fixing_step.numpy()),
        ))
    return out


def assert_states_equal(a: list, b: list) -> None:
    assert [s["name"] for s in a] == [s["name"] for s in b]
    for sa, sb in zip(a, b):
        for key in ("masks", "fixed_values", "effective"):
            assert len(sa[key]) == len(sb[key])
            for x, y in zip(sa[key], sb[key]):
                assert x.dtype == y.dtype and x.shape == y.shape
                np.testing.assert_array_equal(x, y, err_msg=f"{sa['name']} {key}")
        np.testing.assert_array_equal(sa["palette"], sb["palette"])
        assert sa["palette_size"] == sb["palette_size"]
        assert sa["fixing_step"] == sb["fixing_step"]


def is_sum_of_signed_powers_of_two(value: float, max_terms: int) -> bool:
    """`value` is 0 or exactly a sum of at most `max_terms` signed powers of two."""
    digits = signed_digits(float(value))
    if len(digits) > max_terms:
        return False
    return math.fsum(s * 2.0 ** e for s, e in digits) == float(value)


class StageRecorder(keras.callbacks.Callback):
    """Snapshots the network right after every fixing stage.

    Put it AFTER `UpdateFixingStep` in the callback list: Keras calls callbacks
    in order, so at `on_train_batch_begin` it sees the state the stage left.
    """

    def __init__(self, update: tfmot_wfn.UpdateFixingStep):
        super().__init__()
        self.update = update
        self.snapshots: List[dict] = []

    def on_train_batch_begin(self, batch, logs=None):
        if len(self.update.history) > len(self.snapshots):
            summary = self.update.history[-1]
            self.snapshots.append(dict(
                step=self.update.step - 1,
                summary=summary,
                masks=flat_masks(self.model),
                values=flat_values(self.model),
                fixed_values=flat_fixed_values(self.model),
                palettes=[wrapper_palette(w) for w in wrappers_of(self.model)],
                palette_vars=[w.palette.numpy() for w in wrappers_of(self.model)],
            ))


@dataclasses.dataclass
class FixedRun:
    model: keras.Model
    callback: tfmot_wfn.UpdateFixingStep
    snapshots: List[dict]
    schedule: tfmot_wfn.StagedFixing
    accuracy: float


def run_full_schedule(float_model, data: Digits, steps_per_stage: Optional[int] = 10,
                      batch_size=64, **fix_kwargs) -> FixedRun:
    """Fix `float_model` through the paper's ten stages."""
    keras.utils.set_random_seed(1)
    schedule = tfmot_wfn.StagedFixing(steps_per_stage=steps_per_stage)
    fixed = tfmot_wfn.fix_weights(float_model, fixing_schedule=schedule, **fix_kwargs)
    compile_classifier(fixed, keras.optimizers.Adam(1e-3))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    recorder = StageRecorder(update)
    steps_per_epoch = math.ceil(len(data.x_train) / batch_size)
    n_stages = len(schedule.fractions)
    if steps_per_stage is None:
        epochs = n_stages  # one epoch per stage
    else:
        epochs = math.ceil(((n_stages - 1) * steps_per_stage + 1) / steps_per_epoch)
    fixed.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=[update, recorder])
    return FixedRun(model=fixed, callback=update, snapshots=recorder.snapshots,
                    schedule=schedule, accuracy=accuracy(fixed, data.x_test, data.y_test))
