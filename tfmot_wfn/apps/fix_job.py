"""`tfmot-wfn fix`: fine-tune a saved Keras classifier with the WFN schedule, checkpointed per stage.

```python
from tfmot_wfn.apps.fix_job import FixJobConfig, run_fix_job, resume_fix_job

config = FixJobConfig(model_path="resnet.keras", output="wfn_cifar10", dataset="cifar10",
                      epochs_per_stage=2, batch_size=128, learning_rate=1e-4)
results = run_fix_job(config)          # or: resume_fix_job("wfn_cifar10") after an interruption
```

The job runs ONE ``model.fit`` per fixing stage: the stage runs at the first
batch of its fit (`UpdateFixingStep`), then the network trains for
``epochs_per_stage`` epochs (the last stage, after which everything is fixed,
trains ``final_epochs`` epochs so BatchNorm statistics follow the final
weights). After every stage it saves the wrapped model (``.keras``: weights,
optimizer, and the fixing state: masks, fixed values, palette, step) and then
``state.json``; the previous checkpoint is deleted only after both are written,
so a run killed at any moment leaves a consistent last completed stage.
`resume_fix_job` loads it and continues with the next stage. Each stage's
training data are shuffled and augmented with seeds derived from (seed, stage),
so a resumed run sees the batches an uninterrupted run would.

Output folder::

    state.json                     job settings, stages done, per-stage numbers
    checkpoints/stage_NN.keras     the last completed stage (wrapped model)
    fixed_model.keras              the final model: plain Keras layers, palette weights
    report.json, report.txt        tfmot_wfn.report of it + accuracy + stages + settings
    plots/*.png                    palette histogram, stage progress, per-layer unique values
    logs/                          TensorBoard: fixing/* (FixingSummaries, palette
                                   histogram, per-layer fixed fraction), train/*, eval/*
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfmot_wfn.utils.atomic_files import atomic_path

STATE_FILE = "state.json"
STATE_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL = "fixed_model.keras"
REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"
PLOTS_DIR = "plots"
LOGS_DIR = "logs"
#: Settings a resumed run must share with the run it continues (they define the schedule).
SCHEDULE_SETTINGS = ("dataset", "data_dir", "distance", "epochs_per_stage",
                     "final_epochs", "batch_size", "fractions", "image_size", "normalization",
                     "steps_per_epoch", "seed", "regularization", "validation_split",
                     "eval_split", "augment")


class FixJobError(ValueError):
    """A fix job cannot start or resume (bad input, output folder in the wrong state)."""


@dataclasses.dataclass
class FixJobConfig:
    """Settings of a fix job (the flags of ``tfmot-wfn fix``).

    Args:
      model_path: the trained float ``.keras`` classifier (one image input, one
        output of ``num_classes`` scores: probabilities or logits, detected).
      output: the output folder.
      dataset: a tfds name, optionally ``NAME:SPLIT`` (exclusive with `data_dir`).
      data_dir: a folder of images in class sub-folders (see `tfmot_wfn.apps.data.from_directory`).
      distance: the paper's delta.
      epochs_per_stage: training epochs after each stage but the last.
      final_epochs: training epochs after the last stage (everything fixed then;
        BatchNorm statistics still adapt).
      batch_size, learning_rate: of the fine-tuning (Adam, clipnorm 0.5).
      fractions: the schedule's cumulative fixed fractions (the paper's ten).
      image_size: default: the model's input size (else the dataset's, else 224).
      normalization: see `tfmot_wfn.apps.data.NORMALIZATIONS`; must match how the
        float model was trained.
      augment: random crop + horizontal flip of training images (False: centre crop only).
      eval_split: tfds evaluation split ("auto": test, else validation; None: none).
      validation_split: for `data_dir` without train/ and val/ sub-folders.
      steps_per_epoch: train at most this many batches per epoch (None: whole split).
      seed: seeds the data order, augmentation and Keras' random state.
      regularization: gamma of the WFN regulariser.
      log_dir: TensorBoard folder (default: ``output/logs``; "" for none).
      keep_checkpoints: keep every stage's checkpoint, not only the last.
      verbose: 1: progress bars and one line per stage; 0: silent.
    """

    model_path: str
    output: str
    dataset: Optional[str] = None
    data_dir: Optional[str] = None
    distance: Optional[float] = None
    epochs_per_stage: int = 1
    final_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 1e-4
    fractions: Optional[Tuple[float, ...]] = None
    image_size: Optional[Tuple[int, int]] = None
    normalization: str = "unit"
    augment: bool = True
    eval_split: Optional[str] = "auto"
    validation_split: float = 0.2
    steps_per_epoch: Optional[int] = None
    seed: int = 0
    regularization: float = 0.4
    log_dir: Optional[str] = None
    keep_checkpoints: bool = False
    verbose: int = 1

    def __post_init__(self):
        import tfmot_wfn

        if (self.dataset is None) == (self.data_dir is None):
            raise FixJobError("give exactly one data source: a tfds dataset (--dataset NAME[:SPLIT]) "
                              "or a folder of images in class sub-folders (--data-dir DIR)")
        if self.distance is None:
            self.distance = tfmot_wfn.DEFAULT_DISTANCE
        if self.fractions is None:
            self.fractions = tuple(tfmot_wfn.PAPER_FRACTIONS)
        self.fractions = tuple(float(f) for f in self.fractions)
        if self.image_size is not None:
            size = self.image_size
            self.image_size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
        for name in ("epochs_per_stage", "final_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise FixJobError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise FixJobError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if not self.learning_rate > 0:
            raise FixJobError(f"learning_rate must be > 0, got {self.learning_rate}")
        # Schedule arguments are checked by the library (clear messages).
        tfmot_wfn.StagedFixing(fractions=self.fractions, steps_per_stage=1)

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["fractions"] = list(self.fractions)
        out["image_size"] = None if self.image_size is None else list(self.image_size)
        return out

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "FixJobConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# --------------------------------------------------------------------- helpers
def _say(verbose: int):
    if not verbose:
        return lambda *a, **k: None
    import sys

    from tqdm.auto import tqdm

    def say(text=""):
        tqdm.write(str(text))  # above any progress bar
        sys.stdout.flush()  # a long run's log file shows each stage as it ends

    return say


def _write_json_atomically(path: str, payload: Dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=_json_default)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_state(output: str) -> Optional[Dict]:
    """The job state in `output` (None if there is none)."""
    path = os.path.join(output, STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        state = json.load(f)
    if state.get("version") != STATE_VERSION:
        raise FixJobError(f"{path} was written by another version of tfmot-wfn "
                          f"(state version {state.get('version')}, expected {STATE_VERSION})")
    return state


def _single_io(model) -> Tuple[tuple, int]:
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise FixJobError(f"model {model.name!r} has {len(inputs)} inputs and {len(outputs)} "
                          "outputs; tfmot-wfn fix fine-tunes image classifiers with one image "
                          "input and one output (use the Python API for other models)")
    in_shape = tuple(inputs[0].shape)
    out_shape = tuple(outputs[0].shape)
    if len(in_shape) != 4:
        raise FixJobError(f"model {model.name!r} takes inputs of shape {in_shape}; tfmot-wfn fix "
                          "needs images (batch, height, width, channels)")
    if len(out_shape) != 2 or out_shape[-1] is None:
        raise FixJobError(f"model {model.name!r} outputs shape {out_shape}; tfmot-wfn fix needs "
                          "class scores (batch, classes)")
    return in_shape, int(out_shape[-1])


def outputs_probabilities(model) -> bool:
    """True if the model's output layer applies softmax (else its outputs are taken as logits)."""
    from tfmot_wfn.keras.compat import keras

    layer = model.outputs[0]._keras_history.operation
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def _image_size(config: FixJobConfig, in_shape: tuple) -> Optional[Tuple[int, int]]:
    h, w = in_shape[1], in_shape[2]
    if h is not None and w is not None:
        if config.image_size is not None and tuple(config.image_size) != (h, w):
            raise FixJobError(f"--image-size {config.image_size[0]}x{config.image_size[1]} differs "
                              f"from the model's input size {h}x{w}")
        return (int(h), int(w))
    return config.image_size


def load_data(config: FixJobConfig, image_size, channels: int, verbose: int = 0):
    """The job's `tfmot_wfn.apps.data.ImageClassificationData`."""
    from tfmot_wfn.apps import data

    if config.dataset is not None:
        return data.from_tfds(config.dataset, eval_split=config.eval_split, image_size=image_size,
                              batch_size=config.batch_size, channels=channels,
                              normalization=config.normalization, seed=config.seed)
    return data.from_directory(config.data_dir, image_size=image_size, batch_size=config.batch_size,
                               validation_split=config.validation_split, channels=channels,
                               normalization=config.normalization, seed=config.seed,
                               verbose=bool(verbose))


def _compile(model, learning_rate: float, from_logits: bool) -> None:
    from tfmot_wfn.keras.compat import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                  metrics=["accuracy"])


# ------------------------------------------------------------------ callbacks
def _progress_callback(keras):
    class BatchProgress(keras.callbacks.Callback):
        """A tqdm bar over the batches of one `fit` (all its epochs) or one `evaluate`."""

        def __init__(self, desc: str, enabled: bool, first_desc: Optional[str] = None,
                     epochs: Optional[int] = None):
            super().__init__()
            self.desc, self.first_desc, self.enabled = desc, first_desc, bool(enabled)
            self.epochs = epochs  # epochs this fit runs (default: params["epochs"])
            self.bar = None

        def _open(self, total):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=self.first_desc or self.desc, unit="batch",
                            disable=not self.enabled, dynamic_ncols=True, leave=False)

        def on_train_begin(self, logs=None):
            steps = (self.params or {}).get("steps")
            epochs = self.epochs or (self.params or {}).get("epochs") or 1
            self._open(steps * epochs if steps else None)

        def on_train_batch_end(self, batch, logs=None):
            if self.first_desc:  # the fixing stage ran at the first batch
                self.bar.set_description(self.desc)
                self.first_desc = None
            logs = logs or {}
            self.bar.set_postfix({k: f"{logs[k]:.4f}" for k in ("loss", "accuracy") if k in logs},
                                 refresh=False)
            self.bar.update(1)

        def on_test_begin(self, logs=None):
            if self.bar is None:
                self._open((self.params or {}).get("steps") or None)

        def on_test_batch_end(self, batch, logs=None):
            if self.bar is not None:
                self.bar.update(1)

        def _close(self):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def on_train_end(self, logs=None):
            self._close()

        def on_test_end(self, logs=None):
            self._close()

    return BatchProgress


def _summaries_callback(keras):
    class TrainingSummaries(keras.callbacks.Callback):
        """TensorBoard: train/* epoch metrics (FixingSummaries writes the fixing/* summaries)."""

        def __init__(self, writer):
            super().__init__()
            self.writer = writer  # the job's writer, open for the whole job

        def on_epoch_end(self, epoch, logs=None):
            from tfmot_wfn.keras import summaries

            with self.writer.as_default():
                summaries.write_scalars(logs or {}, step=epoch, prefix="train")
            self.writer.flush()

    return TrainingSummaries


def _write_eval_summaries(writer, values: Dict[str, float], step: int) -> None:
    if writer is None:
        return
    from tfmot_wfn.keras import summaries

    with writer.as_default():
        summaries.write_scalars(values, step=step, prefix="eval")
    writer.flush()


def _evaluate(model, dataset, enabled: bool, desc: str) -> Dict[str, float]:
    from tfmot_wfn.keras.compat import keras

    if dataset is None:
        return {}
    progress = _progress_callback(keras)(desc, enabled)
    values = model.evaluate(dataset, verbose=0, return_dict=True, callbacks=[progress])
    return {k: float(v) for k, v in values.items()}


def _network_numbers(model) -> Dict[str, float]:
    from tfmot_wfn.core.weight_statistics import entropy_bits, value_counts
    from tfmot_wfn.keras.network_fixing import wrappers_of

    wrappers = wrappers_of(model)
    values = np.concatenate([a.astype(np.float32).ravel() for w in wrappers
                             for a in w.effective_numpy()])
    masks = np.concatenate([m.ravel() for w in wrappers for m in w.mask_numpy()])
    return {"fixed_fraction": float(masks.mean()),
            "unique_values": int(value_counts(values)[0].size),
            "entropy_bits": float(entropy_bits(values))}


# ------------------------------------------------------------------------ job
def _prepare_output(config: FixJobConfig, overwrite: bool) -> None:
    os.makedirs(config.output, exist_ok=True)
    state = read_state(config.output)
    if state is None:
        return
    if not overwrite:
        done, total = state["completed_stages"], len(state["config"]["fractions"])
        what = "a finished run" if state.get("finished") else f"an unfinished run ({done}/{total} stages)"
        raise FixJobError(f"{config.output} already holds {what}. Pass --resume to continue it, "
                          "--overwrite to start again there, or choose another --output.")
    for name in (STATE_FILE, FINAL_MODEL, REPORT_JSON, REPORT_TXT):
        path = os.path.join(config.output, name)
        if os.path.exists(path):
            os.remove(path)
    for name in (CHECKPOINT_DIR, PLOTS_DIR) + ((LOGS_DIR,) if config.log_dir is None else ()):
        shutil.rmtree(os.path.join(config.output, name), ignore_errors=True)


def run_fix_job(config: FixJobConfig, overwrite: bool = False, callbacks: Sequence = (),
                _state: Optional[Dict] = None) -> Dict:
    """Fine-tune `config.model_path` with the WFN schedule; returns the report dict.

    Args:
      config: the job settings.
      overwrite: start again in an output folder that holds a run.
      callbacks: extra Keras callbacks passed to every stage's ``fit``.

    Raises:
      FixJobError: bad settings, a model or dataset that does not fit, or an
        output folder that already holds a run (without `overwrite`).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras

    start_time = time.time()
    verbose = int(config.verbose)
    say = _say(verbose)
    resuming = _state is not None
    if not resuming:
        _prepare_output(config, overwrite)
    log_dir = os.path.join(config.output, LOGS_DIR) if config.log_dir is None else config.log_dir
    keras.utils.set_random_seed(config.seed)

    if resuming:
        checkpoint = os.path.join(config.output, _state["checkpoint"])
        if not os.path.isfile(checkpoint):
            raise FixJobError(f"the checkpoint {checkpoint} named by {STATE_FILE} is missing")
        say(f"resuming {config.output}: stage {_state['completed_stages']}/{len(config.fractions)} "
            f"done; loading {checkpoint}")
        with tfmot_wfn.fixing_scope():
            fixed = keras.models.load_model(checkpoint)  # compiled: optimizer state restored
        in_shape, num_outputs = _single_io(fixed)
    else:
        if not os.path.isfile(config.model_path):
            raise FixJobError(f"no such model file: {config.model_path}")
        with tfmot_wfn.fixing_scope():
            model = keras.models.load_model(config.model_path, compile=False)
        from tfmot_wfn.keras.network_fixing import wrappers_of

        if wrappers_of(model):
            raise FixJobError(f"{config.model_path} is a model saved while fixing (it holds "
                              "WeightFixingWrappers); pass the float model, or continue its run "
                              "with --resume and the run's --output folder")
        in_shape, num_outputs = _single_io(model)
    image_size = _image_size(config, in_shape)
    channels = int(in_shape[3]) if in_shape[3] is not None else 3
    data = load_data(config, image_size, channels, verbose)
    if data.num_classes != num_outputs:
        raise FixJobError(f"the model outputs {num_outputs} scores but {data.source} has "
                          f"{data.num_classes} classes")
    steps_per_epoch = data.steps_per_epoch
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, int(config.steps_per_epoch))
        if steps_per_epoch < data.steps_per_epoch:
            data.warm_cache()  # partial epochs would never complete (and keep) the cache
    steps_per_stage = config.epochs_per_stage * steps_per_epoch
    say(f"data: {data.describe()}")
    eval_ds = data.eval_dataset()
    stages = len(config.fractions)

    if resuming:
        from_logits = bool(_state["from_logits"])
        float_metrics = _state.get("float_metrics", {})
        rows: List[Dict] = list(_state["stages"])
        first_stage = int(_state["completed_stages"])
        from tfmot_wfn.keras.network_fixing import wrappers_of

        schedule = wrappers_of(fixed)[0].fixing_schedule
        if schedule.steps_per_stage != steps_per_stage:
            raise FixJobError(
                f"the run's stages are {schedule.steps_per_stage} training steps long, but the "
                f"data now give {steps_per_stage} ({config.epochs_per_stage} epochs of "
                f"{steps_per_epoch} batches): resume with the same data and batch size")
    else:
        from_logits = not outputs_probabilities(model)
        _compile(model, config.learning_rate, from_logits)
        say(f"model: {config.model_path} ({model.count_params():,} parameters, "
            f"{'logits' if from_logits else 'probabilities'} out)")
        float_metrics = _evaluate(model, eval_ds, bool(verbose), "evaluating the float model")
        if float_metrics:
            say(f"float model: eval accuracy {float_metrics.get('accuracy', float('nan')):.4f}, "
                f"loss {float_metrics.get('loss', float('nan')):.4f}")
        schedule = tfmot_wfn.StagedFixing(fractions=config.fractions, steps_per_stage=steps_per_stage)
        fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule, distance=config.distance,
                                      regularization=config.regularization)
        _compile(fixed, config.learning_rate, from_logits)
        rows, first_stage = [], 0
        _write_json_atomically(os.path.join(config.output, STATE_FILE), _state_payload(
            config, 0, None, rows, from_logits, float_metrics, data))

    say(f"schedule: {stages} stages, fractions {', '.join(f'{f:g}' for f in config.fractions)}; "
        f"delta {config.distance}; {config.epochs_per_stage} epoch(s) of {steps_per_epoch} "
        f"batches after each stage, {config.final_epochs} after the last")
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    base_callbacks = [update]
    writer = None
    if log_dir:
        from tfmot_wfn.keras.compat import tf

        writer = tf.summary.create_file_writer(os.path.join(log_dir, "fixing"))
        base_callbacks += [tfmot_wfn.FixingSummaries(log_dir), _summaries_callback(keras)(writer)]
    try:
        rows = _run_stages(config, fixed, data, rows, first_stage, steps_per_epoch, update,
                           base_callbacks, list(callbacks), writer, from_logits, float_metrics,
                           previous_checkpoint=_state["checkpoint"] if resuming else None)
    finally:
        if writer is not None:
            writer.close()
    return _finish(config, fixed, rows, from_logits, float_metrics, data, eval_ds, log_dir,
                   start_time, say)


def _run_stages(config, fixed, data, rows, first_stage, steps_per_epoch, update, base_callbacks,
                callbacks, writer, from_logits, float_metrics, previous_checkpoint):
    """One fit per stage from `first_stage`; checkpoint and state after each. Returns the rows."""
    from tfmot_wfn.keras.compat import keras

    verbose = int(config.verbose)
    say = _say(verbose)
    stages = len(config.fractions)
    eval_ds = data.eval_dataset()
    progress_cls = _progress_callback(keras)
    rows = list(rows)
    for k in range(first_stage, stages):
        stage_start = time.time()
        epochs = config.epochs_per_stage if k < stages - 1 else config.final_epochs
        initial_epoch = k * config.epochs_per_stage
        # Python and numpy random state per stage (a resumed run draws the same numbers).
        # TensorFlow's global seed is set once per process (run_fix_job): setting it
        # again clears TensorFlow's kernel caches, a slow re-instantiation per stage.
        random.seed(config.seed * 1000 + k)
        np.random.seed(config.seed * 1000 + k)
        train = data.train_dataset(seed=config.seed * 1000 + k, augment=config.augment)
        if config.steps_per_epoch:
            train = train.take(steps_per_epoch)
        fraction = config.fractions[k]
        progress = progress_cls(f"stage {k + 1}/{stages}: training", bool(verbose),
                                first_desc=f"stage {k + 1}/{stages}: fixing {fraction:.4g} of the weights",
                                epochs=epochs)
        ran_before = len(update.history)
        fit_history = fixed.fit(train, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                                shuffle=False, verbose=0,
                                callbacks=[progress] + base_callbacks + callbacks)
        if len(update.history) != ran_before + 1:
            raise RuntimeError(f"stage {k + 1}: expected one fixing stage in this fit, "
                               f"{len(update.history) - ran_before} ran")
        summary = dataclasses.asdict(update.history[-1])
        train_metrics = {name: float(v[-1]) for name, v in fit_history.history.items() if v}
        eval_metrics = _evaluate(fixed, eval_ds, bool(verbose), f"stage {k + 1}/{stages}: evaluating")
        _write_eval_summaries(writer, eval_metrics, initial_epoch + epochs - 1)
        row = {"stage": k + 1, **summary, **_network_numbers(fixed),
               "train_loss": train_metrics.get("loss"),
               "train_accuracy": train_metrics.get("accuracy"),
               "eval_loss": eval_metrics.get("loss"),
               "eval_accuracy": eval_metrics.get("accuracy"),
               "epochs": epochs, "seconds": time.time() - stage_start}
        rows.append(row)
        checkpoint = os.path.join(CHECKPOINT_DIR, f"stage_{k + 1:02d}.keras")
        with atomic_path(os.path.join(config.output, checkpoint)) as tmp:
            fixed.save(tmp)
        _write_json_atomically(os.path.join(config.output, STATE_FILE), _state_payload(
            config, k + 1, checkpoint, rows, from_logits, float_metrics, data))
        if previous_checkpoint and not config.keep_checkpoints and previous_checkpoint != checkpoint:
            old = os.path.join(config.output, previous_checkpoint)
            if os.path.exists(old):
                os.remove(old)
        previous_checkpoint = checkpoint
        acc = row["eval_accuracy"]
        say(f"stage {k + 1}/{stages}: fixed {row['fixed'] / row['total']:.2%} "
            f"(target {fraction:.4g}) at distance {row['distance']:.4g}; palette "
            f"{row['palette_size']} values, {row['unique_values']} unique in all; "
            + (f"eval accuracy {acc:.4f}; " if acc is not None else "")
            + f"{row['seconds']:.0f} s; saved {checkpoint}")
    return rows


def _state_payload(config, completed, checkpoint, rows, from_logits, float_metrics, data,
                   finished=False) -> Dict:
    return {"version": STATE_VERSION, "config": config.to_dict(), "completed_stages": completed,
            "checkpoint": checkpoint, "finished": finished, "stages": rows,
            "from_logits": from_logits, "float_metrics": float_metrics,
            "data": {"source": data.source, "train_split": data.train_split,
                     "eval_split": data.eval_split, "train_examples": data.train_examples,
                     "eval_examples": data.eval_examples, "num_classes": data.num_classes,
                     "image_size": list(data.image_size), "channels": data.channels}}


def _finish(config, fixed, rows, from_logits, float_metrics, data, eval_ds, log_dir, start_time,
            say) -> Dict:
    import tfmot_wfn
    from tfmot_wfn.apps import plot

    say("stripping the wrappers; writing the final model, report and plots")
    final = tfmot_wfn.strip_fixing(fixed)
    final_path = os.path.join(config.output, FINAL_MODEL)
    with atomic_path(final_path) as tmp:
        final.save(tmp)
    _compile(final, config.learning_rate, from_logits)
    fixed_metrics = _evaluate(final, eval_ds, bool(config.verbose), "evaluating the fixed model")
    rep = tfmot_wfn.report(final)
    float_acc = float_metrics.get("accuracy")
    plots = plot.save_all(os.path.join(config.output, PLOTS_DIR), rep, history=rows,
                          baseline_accuracy=float_acc)
    fixed_acc = fixed_metrics.get("accuracy")
    results = {
        "model": config.model_path,
        "data": data.source,
        "float_accuracy": float_acc,
        "fixed_accuracy": fixed_acc,
        "accuracy_change_points": (None if float_acc is None or fixed_acc is None
                                   else 100.0 * (fixed_acc - float_acc)),
        "float_eval": float_metrics,
        "fixed_eval": fixed_metrics,
        "from_logits": from_logits,
        "settings": config.to_dict(),
        "stages": rows,
        "fixed_model": final_path,
        "plots": plots,
        "log_dir": log_dir or None,
        "seconds_this_process": time.time() - start_time,
        **rep.to_dict(),
    }
    _write_json_atomically(os.path.join(config.output, REPORT_JSON), results)
    with open(os.path.join(config.output, REPORT_TXT), "w") as f:
        f.write(str(rep) + "\n")
    state = read_state(config.output) or {}
    state["finished"] = True
    _write_json_atomically(os.path.join(config.output, STATE_FILE), state)
    say("")
    if float_acc is not None and fixed_acc is not None:
        say(f"float accuracy  : {float_acc:.4f}")
        say(f"fixed accuracy  : {fixed_acc:.4f}  ({results['accuracy_change_points']:+.2f} points)")
    say(f"weights         : {rep.total_weights:,} (kernels, normalization gamma/beta, biases)")
    say(f"unique values   : {rep.unique_values} with 0, {rep.unique_values_nonzero} without 0")
    say(f"entropy         : {rep.entropy_bits:.3f} bits with 0, {rep.entropy_bits_nonzero:.3f} "
        "bits without 0")
    say(f"zeros           : {rep.zero_fraction:.2%}")
    say(f"wrote {config.output}/: {FINAL_MODEL}, {REPORT_JSON}, {REPORT_TXT}, "
        f"{PLOTS_DIR}/ ({', '.join(os.path.basename(p) for p in plots.values())})"
        + (f"; TensorBoard: tensorboard --logdir {log_dir}" if log_dir else ""))
    return results


def resume_fix_job(output: str, verbose: Optional[int] = None, callbacks: Sequence = (),
                   overrides: Optional[Dict[str, Any]] = None) -> Dict:
    """Continue the run in `output` after its last completed stage; returns the report dict.

    The settings are the run's own (from ``state.json``). `overrides` may change
    those that do not define the schedule (learning rate, log folder, keeping
    checkpoints); changing a schedule setting raises `FixJobError`. A finished run
    is not trained again: its report is returned.
    """
    state = read_state(output)
    if state is None:
        raise FixJobError(f"nothing to resume in {output}: it has no {STATE_FILE} (start the run "
                          "without --resume)")
    values = dict(state["config"])
    for name, value in (overrides or {}).items():
        if name in SCHEDULE_SETTINGS and _normalised(value) != _normalised(values.get(name)):
            raise FixJobError(f"--resume continues the run with its own settings, but {name} was "
                              f"{values.get(name)!r} there and {value!r} now; drop the option, or "
                              "start a new run in another --output")
        values[name] = value
    values["output"] = output
    if verbose is not None:
        values["verbose"] = verbose
    config = FixJobConfig.from_dict(values)
    if state.get("finished"):
        report_path = os.path.join(output, REPORT_JSON)
        _say(config.verbose)(f"{output} holds a finished run; nothing to resume (see {report_path})")
        with open(report_path) as f:
            return json.load(f)
    if state["completed_stages"] == 0 or not state.get("checkpoint"):
        _say(config.verbose)(f"{output}: no stage was completed; starting the run again")
        return run_fix_job(config, overwrite=True, callbacks=callbacks)
    return run_fix_job(config, callbacks=callbacks, _state=state)


def _normalised(value):
    if isinstance(value, (list, tuple)):
        return [_normalised(v) for v in value]
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 12)
    return value
