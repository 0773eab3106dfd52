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

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from tfmot_wfn.apps.data import NORMALIZATIONS
from tfmot_wfn.core.fixing_rules import DEFAULT_RULE
from tfmot_wfn.utils.atomic_files import atomic_path, write_json_atomically

STATE_FILE = "state.json"
STATE_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL = "fixed_model.keras"
REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"
PLOTS_DIR = "plots"
LOGS_DIR = "logs"
#: What ``--distance auto`` writes (the search's frontier, as JSON and as a plot).
SEARCH_FILES = ("distance_search.json", "distance_search.png")
#: ``distance="auto"``: `search_distance` chooses delta, within this many full runs (its
#: default; the job's own run at that delta comes after).
AUTO = "auto"
AUTO_BUDGET = 3.0
#: A float accuracy below this many times chance gets a warning (a wrong --normalize).
NEAR_CHANCE = 1.5
#: Settings a resumed run must share with the run it continues (they define the schedule).
SCHEDULE_SETTINGS = ("dataset", "data_dir", "distance", "epochs_per_stage",
                     "final_epochs", "batch_size", "fractions", "image_size", "normalization",
                     "steps_per_epoch", "seed", "regularization", "rule", "int8_exact",
                     "validation_split",
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
      distance: the paper's delta, or ``"auto"``: `tfmot_wfn.search_distance` picks the
        largest delta whose drop plus one paired standard error is within ``tolerance`` of
        the float model's evaluation accuracy (its budget: `AUTO_BUDGET` full runs), then
        the job runs at that delta.
      tolerance: the accuracy drop allowed by ``distance="auto"`` (absolute; 0.005 = half a point).
      search_by_batches: ``distance="auto"`` counts its budget in training batches only
        (``search_distance(..., count_seconds=False)``): the same delta on any machine.
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
      rule: the fixing rule (`tfmot_wfn.fix_weights(..., rule=)`).
      int8_exact: every kernel channel exact int8 codes times a power of two
        (`tfmot_wfn.fix_weights(..., int8_exact=True)`).
      log_dir: TensorBoard folder (default: ``output/logs``; "" for none).
      keep_checkpoints: keep every stage's checkpoint, not only the last.
      verbose: 1: progress bars and one line per stage; 0: silent.
    """

    model_path: str
    output: str
    dataset: Optional[str] = None
    data_dir: Optional[str] = None
    distance: Union[None, float, str] = None
    tolerance: float = 0.005
    search_by_batches: bool = False
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
    rule: str = DEFAULT_RULE
    int8_exact: bool = False
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
        if self.distance != AUTO and not 0.0 < float(self.distance) < 1.0:
            raise FixJobError(f"distance must be in (0, 1) or {AUTO!r}, got {self.distance!r}")
        if not 0.0 <= float(self.tolerance) < 1.0:
            raise FixJobError(f"tolerance must be in [0, 1), got {self.tolerance!r}")
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
    from tfmot_wfn.keras.compat import keras, producing_layer

    layer = producing_layer(model.outputs[0])
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


def _evaluate(model, dataset, enabled: bool, desc: str) -> Dict[str, float]:
    from tfmot_wfn.apps.fit_callbacks import BatchProgress

    if dataset is None:
        return {}
    progress = BatchProgress(desc, enabled)
    values = model.evaluate(dataset, verbose=0, return_dict=True, callbacks=[progress])
    return {k: float(v) for k, v in values.items()}


def _network_numbers(model) -> Dict[str, float]:
    from tfmot_wfn.keras.network import FixingNetwork

    stats = FixingNetwork.of(model).statistics()
    return {"fixed_fraction": stats.fixed_fraction, "unique_values": stats.unique_values,
            "entropy_bits": stats.entropy_bits}


# ------------------------------------------------------------------------ job
@dataclasses.dataclass
class _JobRun:
    """What one process of a fix job works with, from loading the model to the report.

    `_start_from_float_model` or `_continue_from_checkpoint` fills in the model
    being fixed and the numbers a resumed run takes over; every completed stage
    appends its row and moves `completed_stages` and `checkpoint` on.
    """

    config: FixJobConfig
    data: Any  # tfmot_wfn.apps.data.ImageClassificationData
    eval_ds: Any  # the evaluation batches (None without an evaluation split)
    steps_per_epoch: int
    log_dir: str  # "" for no TensorBoard logs
    start_time: float
    say: Callable[..., None]
    model: Any = None  # the wrapped model being fixed
    from_logits: bool = False
    float_metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    rows: List[Dict] = dataclasses.field(default_factory=list)  # one per completed stage
    completed_stages: int = 0
    checkpoint: Optional[str] = None  # the last completed stage's, relative to the output

    @property
    def verbose(self) -> bool:
        return bool(int(self.config.verbose))

    @property
    def stages(self) -> int:
        return len(self.config.fractions)

    def path(self, name: str) -> str:
        """`name` in the output folder."""
        return os.path.join(self.config.output, name)


@dataclasses.dataclass
class _StageCallbacks:
    """The callbacks of every stage's `fit`, and the job's own TensorBoard writer."""

    update: Any  # UpdateFixingStep: runs the stage at the first batch of its fit
    others: List  # FixingSummaries and train/* summaries (with logs), then the caller's
    writer: Any = None  # the eval/* summaries' writer (None without logs)

    def for_fit(self) -> List:
        return [self.update] + self.others


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
    files = [os.path.join(config.output, name)
             for name in (STATE_FILE, FINAL_MODEL, REPORT_JSON, REPORT_TXT) + SEARCH_FILES]
    folders = [os.path.join(config.output, name)
               for name in (CHECKPOINT_DIR, PLOTS_DIR) + ((LOGS_DIR,) if config.log_dir is None else ())]
    _refuse_removing_the_model(config.model_path, files, folders)
    for path in files:
        if os.path.exists(path):
            os.remove(path)
    for path in folders:
        shutil.rmtree(path, ignore_errors=True)


def _refuse_removing_the_model(model_path: str, files: Sequence[str], folders: Sequence[str]) -> None:
    """FixJobError when ``--overwrite`` would remove the model to fix (say, the previous
    run's fixed model, fixed again into the same --output): nothing is removed then."""
    model = os.path.realpath(model_path)
    doomed = [f for f in files if os.path.realpath(f) == model]
    doomed += [d for d in folders if model.startswith(os.path.realpath(d) + os.sep)]
    if doomed:
        raise FixJobError(f"--overwrite would remove {model_path}, the model to fix (it is part of "
                          f"the run in {os.path.dirname(doomed[0]) or '.'}): copy it elsewhere "
                          "first, or choose another --output")


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
    from tfmot_wfn.keras.compat import keras

    start_time = time.time()
    say = _say(int(config.verbose))
    if _state is None:
        _prepare_output(config, overwrite)
    keras.utils.set_random_seed(config.seed)
    model = _load_float_model(config) if _state is None else _load_checkpoint(config, _state, say)
    data, steps_per_epoch = _job_data(config, model)
    say(f"data: {data.describe()}")
    run = _JobRun(config=config, data=data, eval_ds=data.eval_dataset(),
                  steps_per_epoch=steps_per_epoch, log_dir=_log_dir(config),
                  start_time=start_time, say=say)
    if _state is None:
        _start_from_float_model(run, model)
    else:
        _continue_from_checkpoint(run, model, _state)
    _say_schedule(run)
    with _stage_callbacks(run, callbacks) as stage_callbacks:
        _run_stages(run, stage_callbacks)
    return _finish(run)


# ------------------------------------------------------------- job: start
def _log_dir(config: FixJobConfig) -> str:
    return os.path.join(config.output, LOGS_DIR) if config.log_dir is None else config.log_dir


def _load_float_model(config: FixJobConfig):
    """The float model to fix (refusing one saved while fixing)."""
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras
    from tfmot_wfn.keras.network import wrappers_of

    if not os.path.isfile(config.model_path):
        raise FixJobError(f"no such model file: {config.model_path}")
    with tfmot_wfn.fixing_scope():
        model = keras.models.load_model(config.model_path, compile=False)
    if wrappers_of(model):
        raise FixJobError(f"{config.model_path} is a model saved while fixing (it holds "
                          "WeightFixingWrappers); pass the float model, or continue its run "
                          "with --resume and the run's --output folder")
    return model


def _load_checkpoint(config: FixJobConfig, state: Dict, say):
    """The wrapped model of the last completed stage, compiled (optimizer state restored)."""
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras

    checkpoint = os.path.join(config.output, state["checkpoint"])
    if not os.path.isfile(checkpoint):
        raise FixJobError(f"the checkpoint {checkpoint} named by {STATE_FILE} is missing")
    say(f"resuming {config.output}: stage {state['completed_stages']}/{len(config.fractions)} "
        f"done; loading {checkpoint}")
    with tfmot_wfn.fixing_scope():
        return keras.models.load_model(checkpoint)


def _job_data(config: FixJobConfig, model) -> Tuple[Any, int]:
    """The data for `model`'s input and classes, and the training batches per epoch."""
    in_shape, num_outputs = _single_io(model)
    image_size = _image_size(config, in_shape)
    channels = int(in_shape[3]) if in_shape[3] is not None else 3
    data = load_data(config, image_size, channels, config.verbose)
    if data.num_classes != num_outputs:
        raise FixJobError(f"the model outputs {num_outputs} scores but {data.source} has "
                          f"{data.num_classes} classes")
    steps_per_epoch = data.steps_per_epoch
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, int(config.steps_per_epoch))
        if steps_per_epoch < data.steps_per_epoch:
            data.warm_cache()  # partial epochs would never complete (and keep) the cache
    return data, steps_per_epoch


def _start_from_float_model(run: _JobRun, model) -> None:
    """Compile and evaluate the float model, wrap it for fixing; write the first state."""
    import tfmot_wfn
    from tfmot_wfn.keras.network import FixingNetwork

    config = run.config
    run.from_logits = not outputs_probabilities(model)
    _compile(model, config.learning_rate, run.from_logits)
    run.say(f"model: {config.model_path} ({model.count_params():,} parameters, "
            f"{'logits' if run.from_logits else 'probabilities'} out)")
    run.float_metrics = _evaluate(model, run.eval_ds, run.verbose, "evaluating the float model")
    if run.float_metrics:
        metrics = run.float_metrics
        run.say(f"float model: eval accuracy {metrics.get('accuracy', float('nan')):.4f}, "
                f"loss {metrics.get('loss', float('nan')):.4f}")
        _warn_if_near_chance(metrics.get("accuracy"), run.data)
    if config.distance == AUTO:
        config.distance = _search_distance(run, model)
    schedule = tfmot_wfn.StagedFixing(fractions=config.fractions,
                                      steps_per_stage=config.epochs_per_stage * run.steps_per_epoch)
    run.model = tfmot_wfn.fix_weights(model, fixing_schedule=schedule, distance=config.distance,
                                      regularization=config.regularization, rule=config.rule,
                                      int8_exact=config.int8_exact)
    # "auto" became a concrete rule for this network: settings, checkpoints and report.json
    # name that one.
    config.rule = FixingNetwork.of(run.model).rule
    _compile(run.model, config.learning_rate, run.from_logits)
    _write_state(run)


def _warn_if_near_chance(accuracy: Optional[float], data) -> None:
    """Warn when the float model scores near chance on the data as fed (a wrong --normalize)."""
    chance = 1.0 / max(int(data.num_classes), 1)
    if accuracy is not None and accuracy < NEAR_CHANCE * chance and chance < 0.5:
        warnings.warn(
            f"the float model's accuracy on the evaluation data as fed is {accuracy:.4f}, near "
            f"chance ({chance:.4f} for {data.num_classes} classes): the images are probably not "
            f"prepared as the model was trained on them. Check --normalize (now "
            f"{data.normalization!r}; one of {', '.join(NORMALIZATIONS)}) and --image-size.",
            UserWarning, stacklevel=2)


def _search_distance(run: _JobRun, model) -> float:
    """`search_distance` on the job's data; writes distance_search.json/.png; the chosen delta."""
    from tfmot_wfn.apps.distance_search import search_distance

    if run.eval_ds is None:
        raise FixJobError("--distance auto needs evaluation data: give a dataset with an "
                          "evaluation split, or --validation-split > 0")
    config = run.config
    train = run.data.train_dataset(seed=config.seed, augment=config.augment)
    train = train.take(run.steps_per_epoch)
    search = search_distance(
        model, train, run.eval_ds, tolerance=config.tolerance,
        epochs_per_stage=config.epochs_per_stage, fractions=config.fractions, budget=AUTO_BUDGET,
        seed=config.seed, verbose=config.verbose, regularization=config.regularization, rule=config.rule,
        int8_exact=config.int8_exact, count_seconds=not config.search_by_batches)
    search.to_json(run.path(SEARCH_FILES[0]))
    search.plot(run.path(SEARCH_FILES[1]))
    run.say(str(search))
    run.say(f"--distance auto: delta {search.distance:g}")
    return float(search.distance)


def _continue_from_checkpoint(run: _JobRun, model, state: Dict) -> None:
    """Take over the interrupted run's numbers; refuse data that change the stage length."""
    from tfmot_wfn.keras.network import FixingNetwork

    run.model = model
    run.from_logits = bool(state["from_logits"])
    run.float_metrics = state.get("float_metrics", {})
    run.rows = list(state["stages"])
    run.completed_stages = int(state["completed_stages"])
    run.checkpoint = state["checkpoint"]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:  # --learning-rate may change on resume: the checkpoint's is the old
        optimizer.learning_rate.assign(run.config.learning_rate)
    steps_per_stage = run.config.epochs_per_stage * run.steps_per_epoch
    schedule = FixingNetwork.of(model).fixing_schedule
    if schedule.steps_per_stage != steps_per_stage:
        raise FixJobError(
            f"the run's stages are {schedule.steps_per_stage} training steps long, but the "
            f"data now give {steps_per_stage} ({run.config.epochs_per_stage} epochs of "
            f"{run.steps_per_epoch} batches): resume with the same data and batch size")


def _say_schedule(run: _JobRun) -> None:
    config = run.config
    run.say(f"schedule: {run.stages} stages, fractions "
            f"{', '.join(f'{f:g}' for f in config.fractions)}; delta {config.distance}; "
            f"{config.epochs_per_stage} epoch(s) of {run.steps_per_epoch} batches after each "
            f"stage, {config.final_epochs} after the last")


@contextlib.contextmanager
def _stage_callbacks(run: _JobRun, extra: Sequence) -> Iterator[_StageCallbacks]:
    """The stages' callbacks; the job's summary writer is open while they run."""
    import tfmot_wfn
    from tfmot_wfn.apps.fit_callbacks import TrainingSummaries
    from tfmot_wfn.keras.compat import tf

    callbacks = _StageCallbacks(update=tfmot_wfn.UpdateFixingStep(verbose=0), others=[])
    if run.log_dir:
        callbacks.writer = tf.summary.create_file_writer(os.path.join(run.log_dir, "fixing"))
        callbacks.others += [tfmot_wfn.FixingSummaries(run.log_dir),
                             TrainingSummaries(callbacks.writer)]
    callbacks.others += list(extra)
    try:
        yield callbacks
    finally:
        if callbacks.writer is not None:
            callbacks.writer.close()


# ------------------------------------------------------------ job: stages
def _run_stages(run: _JobRun, callbacks: _StageCallbacks) -> None:
    """One fit per stage after the completed ones; checkpoint and state after each."""
    from tfmot_wfn.apps.fit_callbacks import write_scalars_to

    for k in range(run.completed_stages, run.stages):
        stage_start = time.time()
        initial_epoch, epochs = _stage_epochs(run.config, k)
        summary, train_metrics = _fit_stage(run, k, callbacks)
        eval_metrics = _evaluate(run.model, run.eval_ds, run.verbose,
                                 f"stage {k + 1}/{run.stages}: evaluating")
        if callbacks.writer is not None:
            write_scalars_to(callbacks.writer, eval_metrics, initial_epoch + epochs - 1, "eval")
        row = {"stage": k + 1, **summary, **_network_numbers(run.model),
               "train_loss": train_metrics.get("loss"),
               "train_accuracy": train_metrics.get("accuracy"),
               "eval_loss": eval_metrics.get("loss"),
               "eval_accuracy": eval_metrics.get("accuracy"),
               "epochs": epochs, "seconds": time.time() - stage_start}
        run.rows.append(row)
        _save_checkpoint(run, k + 1)
        _say_stage(run, row)


def _stage_epochs(config: FixJobConfig, k: int) -> Tuple[int, int]:
    """(first epoch, epochs) of stage `k` (from 0); the last stage trains `final_epochs`."""
    epochs = config.epochs_per_stage if k < len(config.fractions) - 1 else config.final_epochs
    return k * config.epochs_per_stage, epochs


def _seed_random_layers(model, seed: int) -> None:
    """Every random layer's generator (Dropout's) starts stage `seed`'s fit from a state that
    depends only on it: the checkpoints do not hold those states, so a resumed run would
    otherwise draw other dropout masks than the uninterrupted one."""
    from tfmot_wfn.keras.compat import seed_generator_states

    for i, state in enumerate(seed_generator_states(model)):
        state.assign(np.array([seed * 7919 + i, 0], dtype=state.dtype))


def _fit_stage(run: _JobRun, k: int, callbacks: _StageCallbacks) -> Tuple[Dict, Dict[str, float]]:
    """Stage `k`'s fit; its fixing stage runs at the first batch. (stage summary, train metrics)."""
    from tfmot_wfn.apps.fit_callbacks import BatchProgress

    config = run.config
    initial_epoch, epochs = _stage_epochs(config, k)
    # Python and numpy random state per stage (a resumed run draws the same numbers).
    # TensorFlow's global seed is set once per process (run_fix_job): setting it
    # again clears TensorFlow's kernel caches, a slow re-instantiation per stage.
    random.seed(config.seed * 1000 + k)
    np.random.seed(config.seed * 1000 + k)
    _seed_random_layers(run.model, config.seed * 1000 + k)
    train = run.data.train_dataset(seed=config.seed * 1000 + k, augment=config.augment)
    if config.steps_per_epoch:
        train = train.take(run.steps_per_epoch)
    progress = BatchProgress(
        f"stage {k + 1}/{run.stages}: training", run.verbose,
        first_desc=f"stage {k + 1}/{run.stages}: fixing {config.fractions[k]:.4g} of the weights",
        epochs=epochs)
    update = callbacks.update
    ran_before = len(update.history)
    fit_history = run.model.fit(train, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                                shuffle=False, verbose=0,
                                callbacks=[progress] + callbacks.for_fit())
    if len(update.history) != ran_before + 1:
        raise RuntimeError(f"stage {k + 1}: expected one fixing stage in this fit, "
                           f"{len(update.history) - ran_before} ran")
    train_metrics = {name: float(v[-1]) for name, v in fit_history.history.items() if v}
    return dataclasses.asdict(update.history[-1]), train_metrics


def _state_payload(run: _JobRun) -> Dict:
    data = run.data
    return {"version": STATE_VERSION, "config": run.config.to_dict(),
            "completed_stages": run.completed_stages, "checkpoint": run.checkpoint,
            "finished": False, "stages": run.rows,
            "from_logits": run.from_logits, "float_metrics": run.float_metrics,
            "data": {"source": data.source, "train_split": data.train_split,
                     "eval_split": data.eval_split, "train_examples": data.train_examples,
                     "eval_examples": data.eval_examples, "num_classes": data.num_classes,
                     "image_size": list(data.image_size), "channels": data.channels}}


def _write_state(run: _JobRun) -> None:
    write_json_atomically(run.path(STATE_FILE), _state_payload(run), default=_json_default)


def _save_checkpoint(run: _JobRun, completed: int) -> None:
    """Save the wrapped model, then the state naming it; only then drop the previous one."""
    checkpoint = os.path.join(CHECKPOINT_DIR, f"stage_{completed:02d}.keras")
    with atomic_path(run.path(checkpoint)) as tmp:
        run.model.save(tmp)
    previous = run.checkpoint
    run.completed_stages, run.checkpoint = completed, checkpoint
    _write_state(run)
    if previous and not run.config.keep_checkpoints and previous != checkpoint:
        if os.path.exists(run.path(previous)):
            os.remove(run.path(previous))


def _say_stage(run: _JobRun, row: Dict) -> None:
    k, acc = row["stage"] - 1, row["eval_accuracy"]
    run.say(f"stage {k + 1}/{run.stages}: fixed {row['fixed'] / row['total']:.2%} "
            f"(target {run.config.fractions[k]:.4g}) at distance {row['distance']:.4g}; palette "
            f"{row['palette_size']} values, {row['unique_values']} unique in all; "
            + (f"eval accuracy {acc:.4f}; " if acc is not None else "")
            + f"{row['seconds']:.0f} s; saved {run.checkpoint}")


# ------------------------------------------------------------- job: finish
def _finish(run: _JobRun) -> Dict:
    """Strip, save and evaluate the final model; write the report, plots and finished state."""
    import tfmot_wfn
    from tfmot_wfn.apps import plot

    run.say("stripping the wrappers; writing the final model, report and plots")
    final = tfmot_wfn.strip_fixing(run.model)
    with atomic_path(run.path(FINAL_MODEL)) as tmp:
        final.save(tmp)
    _compile(final, run.config.learning_rate, run.from_logits)
    fixed_metrics = _evaluate(final, run.eval_ds, run.verbose, "evaluating the fixed model")
    rep = tfmot_wfn.report(final)
    plots = plot.save_all(run.path(PLOTS_DIR), rep, history=run.rows,
                          baseline_accuracy=run.float_metrics.get("accuracy"))
    results = _results(run, fixed_metrics, rep, plots)
    write_json_atomically(run.path(REPORT_JSON), results, default=_json_default)
    with open(run.path(REPORT_TXT), "w") as f:
        f.write(str(rep) + "\n")
    state = read_state(run.config.output) or {}
    state["finished"] = True
    write_json_atomically(run.path(STATE_FILE), state, default=_json_default)
    _say_results(run, results, rep)
    return results


def _results(run: _JobRun, fixed_metrics: Dict[str, float], rep, plots: Dict[str, str]) -> Dict:
    """The report dict: accuracies, stages, settings, outputs and `tfmot_wfn.report`'s numbers."""
    float_acc = run.float_metrics.get("accuracy")
    fixed_acc = fixed_metrics.get("accuracy")
    return {
        "model": run.config.model_path,
        "data": run.data.source,
        "float_accuracy": float_acc,
        "fixed_accuracy": fixed_acc,
        "accuracy_change_points": (None if float_acc is None or fixed_acc is None
                                   else 100.0 * (fixed_acc - float_acc)),
        "float_eval": run.float_metrics,
        "fixed_eval": fixed_metrics,
        "from_logits": run.from_logits,
        "settings": run.config.to_dict(),
        "stages": run.rows,
        "fixed_model": run.path(FINAL_MODEL),
        "plots": plots,
        "log_dir": run.log_dir or None,
        "seconds_this_process": time.time() - run.start_time,
        **rep.to_dict(),
        "rule": run.config.rule,  # the stripped model's report cannot know these two
        "int8_exact": run.config.int8_exact,
    }


def _say_results(run: _JobRun, results: Dict, rep) -> None:
    say, float_acc, fixed_acc = run.say, results["float_accuracy"], results["fixed_accuracy"]
    say("")
    if float_acc is not None and fixed_acc is not None:
        say(f"float accuracy  : {float_acc:.4f}")
        say(f"fixed accuracy  : {fixed_acc:.4f}  ({results['accuracy_change_points']:+.2f} points)")
    say(f"weights         : {rep.total_weights:,} (kernels, normalization gamma/beta, biases)")
    say(f"unique values   : {rep.unique_values} with 0, {rep.unique_values_nonzero} without 0")
    say(f"entropy         : {rep.entropy_bits:.3f} bits with 0, {rep.entropy_bits_nonzero:.3f} "
        "bits without 0")
    say(f"zeros           : {rep.zero_fraction:.2%}")
    say(f"wrote {run.config.output}/: {FINAL_MODEL}, {REPORT_JSON}, {REPORT_TXT}, "
        f"{PLOTS_DIR}/ ({', '.join(os.path.basename(p) for p in results['plots'].values())})"
        + (f"; TensorBoard: tensorboard --logdir {run.log_dir}" if run.log_dir else ""))


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
        if name in ("distance", "rule") and value == AUTO:
            continue  # the same command with --resume: the run holds what "auto" chose
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
