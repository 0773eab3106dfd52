"""Write (and optionally execute) the notebooks of this folder from the cells below.

```bash
python notebooks/make_notebooks.py                 # write the .ipynb files, no outputs
python notebooks/make_notebooks.py --execute       # also run them (full mode) and save the outputs
WFN_NOTEBOOK_SMOKE=1 python notebooks/make_notebooks.py --execute   # quick check, tiny sizes
python notebooks/make_notebooks.py --relink        # only rewrite badges + install cells (after
                                                   # changing GITHUB_REPO), keeping the outputs
```

The notebooks are the source users open; this script keeps their cells in one
reviewable place. Edit the cells here, then regenerate. The CI test
(tests/test_notebooks.py) executes the .ipynb files in smoke mode
(``WFN_NOTEBOOK_SMOKE=1``: tiny data or tfds mock data, few steps).

``GITHUB_REPO`` is the GitHub ``owner/name`` used by the "Open in Colab" badges and
the install cells. It is a placeholder (``OWNER/tfmot-wfn``) until the repository
is published: set it to the real one here, the only place it is written, then run
``--relink`` to update the committed notebooks without re-running them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: GitHub owner/name of this repository, for the Colab badges and the install cells.
#: PLACEHOLDER: set it to the published repository, then run this script with --relink.
GITHUB_REPO = "OWNER/tfmot-wfn"
BRANCH = "main"


def badge(name: str) -> str:
    url = f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/{BRANCH}/notebooks/{name}"
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})")


def install_cell(extras: str = "") -> str:
    spec = f"tfmot-wfn{extras} @ git+https://github.com/{GITHUB_REPO}.git"
    return f'''# Install tfmot-wfn (skipped when it is already importable: a checkout, CI, a re-run).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("tfmot_wfn") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "{spec}"])
import tfmot_wfn

print("tfmot_wfn", tfmot_wfn.__version__)'''


SETUP = '''%matplotlib inline
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Smoke mode (CI): tiny data and few steps, so every cell runs in seconds.
SMOKE = os.environ.get("WFN_NOTEBOOK_SMOKE", "0") == "1"
'''


# ------------------------------------------------------------------ quickstart
def quickstart():
    cells = [
        new_markdown_cell(f"""# Weight Fixing Networks: quickstart

{badge("quickstart.ipynb")}

Weight Fixing Networks (WFN; Subia-Waud & Dasmahapatra, ECCV 2022) fine-tune a trained network so
that **all of its weights share one small palette of values** (a few dozen), each a sum of a few
signed powers of two, with no loss of accuracy. `tfmot_wfn` does it in Keras with the API of the
TF Model Optimization Toolkit's pruning.

This notebook, on scikit-learn's 8x8 digits (no download), in a few minutes on a CPU:

1. trains a small float CNN,
2. fixes its weights with the paper's ten-stage schedule (`fix_weights` + `UpdateFixingStep`),
3. reports the palette, the unique values and the entropy, and plots them,
4. exports a palette TFLite file and runs it on the mobile interpreter (LiteRT),
5. shows the same from the command line (`tfmot-wfn fix / report / export`)."""),
        new_code_cell(install_cell()),
        new_code_cell(SETUP + '''
import numpy as np
import keras

import tfmot_wfn
from tfmot_wfn import lite, plot
from tfmot_wfn.apps.demo import build_cnn, load_digits_split

FLOAT_EPOCHS = 3 if SMOKE else 30
EPOCHS_PER_STAGE = 1 if SMOKE else 2
OUT = "wfn_quickstart"
os.makedirs(OUT, exist_ok=True)
keras.utils.set_random_seed(0)
print("smoke mode" if SMOKE else "full mode", "| keras", keras.__version__)'''),
        new_markdown_cell("## 1. A trained float model\n\nA CNN with BatchNorm on the 8x8 digits "
                          "(1437 training images, 360 test images)."),
        new_code_cell('''x_train, x_test, y_train, y_test = load_digits_split(seed=0)
model = build_cnn(keras)
model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=32, epochs=FLOAT_EPOCHS, verbose=0)
float_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
print(f"float test accuracy: {float_accuracy:.4f}")
print(f"distinct weight values: {tfmot_wfn.unique_weights(model):,}")'''),
        new_markdown_cell("""## 2. Fix the weights

`fix_weights` wraps every layer (the model you pass is not changed). `StagedFixing` is the paper's
staircase: at the start of stage *i* the fraction 30%, 60%, 80%, ... 100% of **all** weights of
the network is fixed to the shared palette, then the network re-trains for `steps_per_stage`
steps. `UpdateFixingStep` runs the stages; `FixingSummaries` writes TensorBoard logs (fixed
fraction, unique values, entropy, regulariser, palette histogram, per-layer fixed fraction)."""),
        new_code_cell('''from tfmot_wfn.keras.progress import EpochProgress

steps_per_epoch = int(np.ceil(len(x_train) / 32))
schedule = tfmot_wfn.StagedFixing(steps_per_stage=EPOCHS_PER_STAGE * steps_per_epoch)
fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule, distance=0.015)
fixed.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=0.5),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
epochs = (len(schedule.fractions) - 1) * EPOCHS_PER_STAGE + 1   # 9 stages x E epochs + 1
update = tfmot_wfn.UpdateFixingStep(verbose=0)
fixed.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0,
          callbacks=[update, tfmot_wfn.FixingSummaries(log_dir=f"{OUT}/logs"),
                     EpochProgress(epochs, "fixing")])
for stage in update.history:
    print(f"fixed {stage.fixed / stage.total:7.2%} at distance {stage.distance:.3f}: "
          f"palette {stage.palette_size} values")'''),
        new_markdown_cell("""To watch training in TensorBoard (on Colab, or with `pip install tensorboard`):

```
%load_ext tensorboard
%tensorboard --logdir wfn_quickstart/logs
```"""),
        new_markdown_cell("## 3. Strip, measure, report\n\n`strip_fixing` returns a plain Keras "
                          "model of the original architecture whose weights are palette values."),
        new_code_cell('''final = tfmot_wfn.strip_fixing(fixed)
final.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
fixed_accuracy = final.evaluate(x_test, y_test, verbose=0)[1]
print(f"float accuracy {float_accuracy:.4f} -> fixed accuracy {fixed_accuracy:.4f}")
report = tfmot_wfn.report(final)
print(report)
final.save(f"{OUT}/fixed_model.keras")'''),
        new_markdown_cell("## 4. Plots\n\nHow many weights use each palette value (log scale), "
                          "how the stages went, and the distinct values per layer."),
        new_code_cell("plot.palette_histogram(final, f\"{OUT}/palette_histogram.png\")"),
        new_code_cell("plot.stage_progress(update.history, f\"{OUT}/stage_progress.png\")"),
        new_code_cell("plot.layer_unique_values(report, f\"{OUT}/layer_unique_values.png\")"),
        new_markdown_cell("""## 5. Export for mobile and run on the interpreter

The palette TFLite file stores each weight as a uint8 index into one float32 palette shared by
the whole network; it runs on any stock TFLite interpreter, and `load_interpreter` decodes it
once at load so it runs at float speed. See `tflite_deployment.ipynb` for more."""),
        new_code_cell('''palette_file = lite.export_tflite(final, f"{OUT}/model_palette.tflite")
dense_file = lite.export_tflite(final, f"{OUT}/model_dense.tflite", mode="dense")
print(palette_file)
print(f"\\nfloat TFLite {dense_file.bytes:,} bytes -> palette TFLite {palette_file.bytes:,} bytes "
      f"(x{palette_file.bytes / dense_file.bytes:.2f})")'''),
        new_code_cell('''interpreter = lite.load_interpreter(palette_file.path, num_threads=1)
probabilities = lite.run_interpreter(interpreter, x_test)
keras_probabilities = final.predict(x_test, verbose=0)
print("runtime:", lite.runtime_name(interpreter))
print(f"interpreter accuracy: {np.mean(probabilities.argmax(-1) == y_test):.4f}")
print("same top-1 as Keras on every test image:",
      bool(np.array_equal(probabilities.argmax(-1), keras_probabilities.argmax(-1))))
print(f"largest output difference: {np.abs(probabilities - keras_probabilities).max():.2e}")'''),
        new_markdown_cell("""## 6. The same from the command line

```bash
tfmot-wfn fix float.keras --dataset cifar10 --output wfn_run     # or --data-dir photos/
tfmot-wfn report wfn_run/fixed_model.keras                       # text, report.json, plots
tfmot-wfn export wfn_run/fixed_model.keras --format palette      # palette TFLite
tfmot-wfn inspect wfn_run/fixed_model_palette.tflite
```

`fix` checkpoints after every stage (`--resume` continues an interrupted run) and logs to
TensorBoard. Here, `report` on the model saved above (in Python: `tfmot_wfn.apps.cli.main([...])`):"""),
        new_code_cell('''from tfmot_wfn.apps import cli

cli.main(["report", f"{OUT}/fixed_model.keras", "--output", f"{OUT}/report"])'''),
    ]
    return cells


CIFAR_SAVED_RUN_NOTE = """> **About the outputs saved in this notebook.** They come from a run on real CIFAR-10
> photographs, but not on the full data set: on a 2-core machine without a GPU and without
> internet access, where tfds could not download CIFAR-10, so the data cell read the local photo
> subset `WFN_CIFAR10_NPZ` (5,085 photos of the CIFAR-10 training set: **4,000 for training,
> 1,085 held out for testing**) and used the local settings: ResNet-20, **25 float epochs**
> (Adam 3e-3, cosine decay), the ten-stage schedule with **1 epoch a stage** (Adam 1e-4), and the
> same for the command-line run, with the library's defaults of that day (the `late_third` fixing
> rule, where `rule="auto"` now picks `bounded_third` for a ResNet; a fresh optimizer at every
> stage); the whole notebook took 8.3 minutes on that machine, which
> was shared with other jobs. Its accuracies are those of a ResNet-20 trained on 4,000 photos
> (float 67%), far below what the full data give; with one short epoch a stage the fixed
> models lose 1.8 points here (the Python run) and 3.6 (the command-line run). On Colab (with a GPU runtime) tfds downloads CIFAR-10 and
> the same cells train on the full **50,000 training / 10,000 test** images with the full
> settings (60 float epochs, 3 epochs a stage). CI runs this notebook in smoke mode
> (`WFN_NOTEBOOK_SMOKE=1`: tfds mock data, a ResNet-8, two batches per epoch)."""


# -------------------------------------------------------------- cifar10 resnet
def cifar10_resnet():
    cells = [
        new_markdown_cell(f"""# A ResNet on CIFAR-10 with the full WFN schedule

{badge("cifar10_resnet.ipynb")}

Trains a ResNet-20 (He et al., 2016; 0.27M weights) on CIFAR-10 from TensorFlow Datasets, then
fixes all of its weights with the paper's ten-stage schedule, and exports it. Use a GPU runtime
on Colab (*Runtime → Change runtime type*); the data (~160 MB) are downloaded by tfds. Without
internet, set `WFN_CIFAR10_NPZ` to a `.npz` of CIFAR-10 photos (uint8 `x`, int `y`).

The pipelines come from `tfmot_wfn.apps.data` (decoded once, cached in memory, random crop + flip,
prefetched). The same job from the command line, checkpointed after every stage:

```bash
tfmot-wfn fix resnet20_float.keras --dataset cifar10 --epochs-per-stage 2 --batch-size 128 \\
    --learning-rate 1e-4 --output wfn_cifar10          # add --resume after an interruption
tensorboard --logdir wfn_cifar10/logs
```"""),
        new_markdown_cell(CIFAR_SAVED_RUN_NOTE),
        new_code_cell(install_cell("[data]")),
        new_code_cell(SETUP + '''# Mock data (no download): tfds.testing.mock_data, random images. Always on in smoke mode.
MOCK = SMOKE or os.environ.get("WFN_NOTEBOOK_MOCK", "0") == "1"
# Real CIFAR-10 photos in a local .npz (uint8 x (N, 32, 32, 3), int y), used when tfds cannot
# download cifar10 (no internet). Not needed on Colab.
CIFAR10_NPZ = os.environ.get("WFN_CIFAR10_NPZ")

import numpy as np
import keras
import tensorflow as tf
import tensorflow_datasets as tfds

import tfmot_wfn
from tfmot_wfn import data, lite, plot
from tfmot_wfn.keras.progress import EpochProgress

BLOCKS = 1 if SMOKE else 3              # basic blocks per stage: 3 -> ResNet-20
WIDTH = 8 if SMOKE else 16
# Full CIFAR-10 from tfds (50,000 training images; a GPU runtime):
FLOAT_EPOCHS = 1 if SMOKE else 60
FLOAT_LR = 1e-3
EPOCHS_PER_STAGE = 1 if SMOKE else 3
# The local photo subset (4,000 training photos) on a CPU: fewer epochs (set in the data cell).
LOCAL_FLOAT_EPOCHS, LOCAL_FLOAT_LR, LOCAL_EPOCHS_PER_STAGE = 25, 3e-3, 1
BATCH = 32 if SMOKE else 128
STEPS = 2 if SMOKE else None            # batches per epoch (None: the whole split)
OUT = "wfn_cifar10"
os.makedirs(OUT, exist_ok=True)
keras.utils.set_random_seed(0)
print(f"smoke={SMOKE} mock={MOCK} blocks={BLOCKS} width={WIDTH}")'''),
        new_markdown_cell("""## Data

In this order: CIFAR-10 from tfds (downloaded once, or already prepared); else, without
internet, the real CIFAR-10 photos of the `.npz` named by `WFN_CIFAR10_NPZ` (the last 217 of
each block of 1,017 photos are the test split, as in `benchmarks/models.py`); tfds mock data
(random images) only in smoke mode or with `WFN_NOTEBOOK_MOCK=1`. Train split (random crop +
flip) and test split, batched and prefetched; normalised to [0, 1]. The first line printed says
which data this run used."""),
        new_code_cell('''CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
SOURCE, photos = None, None
if MOCK:
    with tfds.testing.mock_data(num_examples=96):
        cifar = data.from_tfds("cifar10", image_size=32, batch_size=BATCH)
    SOURCE = "mock"
    print("data: tfds MOCK data (random images, random labels; about 10% accuracy is expected)")
else:
    try:
        cifar = data.from_tfds("cifar10", image_size=32, batch_size=BATCH)
        SOURCE = "tfds"
        print(f"data: CIFAR-10 from tfds: {cifar.train_examples:,} train / "
              f"{cifar.eval_examples:,} test images")
    except Exception as error:  # no internet and not prepared
        if not CIFAR10_NPZ:
            raise RuntimeError("tfds could not load cifar10 (no internet?): set WFN_CIFAR10_NPZ to "
                               "a .npz of CIFAR-10 photos (uint8 x, int y), or WFN_NOTEBOOK_MOCK=1 "
                               "for random mock data") from error
        print(f"tfds cifar10 is not available here ({type(error).__name__}: {error})")
if SOURCE is None:
    with np.load(CIFAR10_NPZ) as f:
        x, y = f["x"], f["y"].astype(np.int64)
    test = np.arange(len(y)) % 1017 >= 1017 - 217   # the last 217 of each block of 1,017
    photos = {"train": (x[~test], y[~test]), "test": (x[test], y[test])}
    cifar = data.from_arrays(*photos["train"], photos["test"], batch_size=BATCH,
                             class_names=CLASSES, source=f"npz:{CIFAR10_NPZ}")
    SOURCE = "npz"
    FLOAT_EPOCHS, FLOAT_LR, EPOCHS_PER_STAGE = LOCAL_FLOAT_EPOCHS, LOCAL_FLOAT_LR, LOCAL_EPOCHS_PER_STAGE
    print(f"data: real CIFAR-10 photos from {CIFAR10_NPZ}: {cifar.train_examples:,} train / "
          f"{cifar.eval_examples:,} test")
print(cifar.describe())
print(f"float training: {FLOAT_EPOCHS} epochs (Adam {FLOAT_LR:g}, cosine decay); fixing: "
      f"{EPOCHS_PER_STAGE} epoch(s) a stage")
if STEPS:
    cifar.warm_cache()  # partial epochs (take) never complete the cache: fill it once now


def train_batches(seed):
    ds = cifar.train_dataset(seed=seed)
    return ds.take(STEPS) if STEPS else ds


test_batches = cifar.eval_dataset()'''),
        new_markdown_cell("## A ResNet-20\n\nThree stages of basic residual blocks (16, 32, 64 "
                          "channels), BatchNorm, global average pooling, logits."),
        new_code_cell('''L = keras.layers


def block(x, filters, stride):
    shortcut = x
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = L.BatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = L.BatchNormalization()(shortcut)
    return L.ReLU()(L.Add()([y, shortcut]))


def resnet(blocks=3, width=16, classes=10):
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for b in range(blocks):
            x = block(x, filters, 2 if stage > 0 and b == 0 else 1)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(classes)(x), name=f"resnet{6 * blocks + 2}")


model = resnet(BLOCKS, WIDTH)
print(model.name, f"{model.count_params():,} parameters")'''),
        new_markdown_cell("## Float training"),
        new_code_cell('''loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
schedule_lr = keras.optimizers.schedules.CosineDecay(FLOAT_LR, FLOAT_EPOCHS * (STEPS or cifar.steps_per_epoch))
model.compile(optimizer=keras.optimizers.Adam(schedule_lr), loss=loss, metrics=["accuracy"])
model.fit(train_batches(seed=0), epochs=FLOAT_EPOCHS, verbose=0,
          callbacks=[EpochProgress(FLOAT_EPOCHS, "float training")])
float_accuracy = model.evaluate(test_batches, verbose=0)[1]
model.save(f"{OUT}/resnet_float.keras")
print(f"float test accuracy: {float_accuracy:.4f}")'''),
        new_markdown_cell("""## Weight fixing: the full ten-stage schedule

The paper's fractions (30% ... 100%), `EPOCHS_PER_STAGE` epochs of re-training after each stage,
a smaller learning rate than the float training, gradient clipping. `FixingSummaries` writes the
TensorBoard logs to `wfn_cifar10/logs`."""),
        new_code_cell('''steps_per_epoch = STEPS or cifar.steps_per_epoch
schedule = tfmot_wfn.StagedFixing(steps_per_stage=EPOCHS_PER_STAGE * steps_per_epoch)
fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule, distance=0.015)
fixed.compile(optimizer=keras.optimizers.Adam(1e-4, clipnorm=0.5), loss=loss, metrics=["accuracy"])
epochs = (len(schedule.fractions) - 1) * EPOCHS_PER_STAGE + 1
update = tfmot_wfn.UpdateFixingStep(verbose=0)
fixed.fit(train_batches(seed=1), epochs=epochs, verbose=0,
          callbacks=[update, tfmot_wfn.FixingSummaries(f"{OUT}/logs"),
                     EpochProgress(epochs, "fixing")])
for stage in update.history:
    print(f"fixed {stage.fixed / stage.total:7.2%} at distance {stage.distance:.3f}: "
          f"palette {stage.palette_size} values")'''),
        new_code_cell('''final = tfmot_wfn.strip_fixing(fixed)
final.compile(loss=loss, metrics=["accuracy"])
fixed_accuracy = final.evaluate(test_batches, verbose=0)[1]
print(f"float accuracy {float_accuracy:.4f} -> fixed accuracy {fixed_accuracy:.4f}")
report = tfmot_wfn.report(final)
print(f"{report.total_weights:,} weights, {report.unique_values} unique values, "
      f"entropy {report.entropy_bits:.2f} bits")
final.save(f"{OUT}/resnet_fixed.keras")'''),
        new_code_cell("plot.palette_histogram(report)"),
        new_code_cell("plot.stage_progress(update.history)"),
        new_code_cell("plot.layer_unique_values(report)"),
        new_markdown_cell("## Export\n\nThe palette TFLite file against the float one, and the "
                          "interpreter's accuracy on the test split."),
        new_code_cell('''palette_file = lite.export_tflite(final, f"{OUT}/resnet_palette.tflite")
dense_file = lite.export_tflite(final, f"{OUT}/resnet_dense.tflite", mode="dense")
print(f"float TFLite {dense_file.bytes:,} bytes, palette TFLite {palette_file.bytes:,} bytes "
      f"(x{palette_file.bytes / dense_file.bytes:.3f}), palette of {palette_file.palette_size}")
interpreter = lite.load_interpreter(palette_file.path)
correct = total = 0
for x, y in test_batches:
    p = lite.run_interpreter(interpreter, x.numpy())
    correct += int(np.sum(p.argmax(-1) == y.numpy()))
    total += len(y)
print(f"interpreter test accuracy: {correct / total:.4f} (Keras: {fixed_accuracy:.4f})")'''),
        new_markdown_cell("""## The command line, checkpointed

The same schedule with `tfmot-wfn fix`, one training run per stage, a checkpoint after each
(`--resume` continues from the last one), then `fixed_model.keras`, `report.json` and plots.
The CLI reads tfds datasets (`--dataset cifar10`) and image folders (`--data-dir`), not `.npz`
files: with the local photos, this cell first writes the same train/test photos as PNG files
(`train/<class>/*.png`, `test/<class>/*.png`) and passes that folder. (Mock and smoke settings
are passed through so that this cell also runs offline.)"""),
        new_code_cell('''import contextlib

from IPython.display import Image, display

from tfmot_wfn.apps import cli


def write_png_folder(folder, splits):
    """The photos as folder/<split>/<class>/<i>.png, the layout `--data-dir` reads."""
    for split, (x, y) in splits.items():
        for name in CLASSES:
            os.makedirs(os.path.join(folder, split, name), exist_ok=True)
        for i, (image, label) in enumerate(zip(x, y)):
            tf.io.write_file(os.path.join(folder, split, CLASSES[label], f"{i:05d}.png"),
                             tf.io.encode_png(image))


args = ["fix", f"{OUT}/resnet_float.keras",
        "--epochs-per-stage", str(EPOCHS_PER_STAGE), "--batch-size", str(BATCH),
        "--learning-rate", "1e-4", "--output", f"{OUT}/cli_run", "--overwrite"]
if SOURCE == "npz":
    write_png_folder(f"{OUT}/cifar10_png", photos)
    args += ["--data-dir", f"{OUT}/cifar10_png"]
else:
    args += ["--dataset", "cifar10"]
if STEPS:
    args += ["--steps-per-epoch", str(STEPS)]
print("tfmot-wfn", " ".join(args))
with (tfds.testing.mock_data(num_examples=96) if MOCK else contextlib.nullcontext()):
    cli.main(args)
display(Image(f"{OUT}/cli_run/plots/stage_progress.png"))'''),
    ]
    return cells


# ----------------------------------------------------------- tflite deployment
def tflite_deployment():
    cells = [
        new_markdown_cell(f"""# Deploying a fixed network: palette TFLite, archive, sizes, latency

{badge("tflite_deployment.ipynb")}

After weight fixing every weight of the network is one of a few dozen palette values. This
notebook turns that into smaller files for mobile:

* the **palette TFLite file**: each weight tensor stored as uint8 indices into ONE float32
  palette shared by the whole network, decoded by `CAST + GATHER` in the graph (any stock
  interpreter runs it) or once at load (`load_interpreter`, float speed);
* the **int8 weight-only TFLite file**: every weight stored as int8 codes with one scale per output
  channel where that is the float32 weight value for value (WFN values are sums of a few powers of
  two), expanded once at load by the stock interpreter: float speed on a phone with no decoder
  of ours, the float file's outputs, at under half its size here (weights that int8 cannot
  hold go float16; `fix_weights(..., int8_exact=True)` makes every kernel int8);
* the **entropy-coded archive** (`.wfn`): indices coded at their entropy, for download/storage;
* their sizes, the interpreter latency, and what `inspect` says about the file."""),
        new_code_cell(install_cell()),
        new_code_cell(SETUP + '''import gzip

import numpy as np
import keras

import tfmot_wfn
from tfmot_wfn import lite
from tfmot_wfn.apps.demo import build_cnn, load_digits_split
from tfmot_wfn.tflite.latency import compare_latency

FLOAT_EPOCHS = 3 if SMOKE else 30
EPOCHS_PER_STAGE = 1 if SMOKE else 2
LATENCY_RUNS = 50 if SMOKE else 2000
OUT = "wfn_tflite"
os.makedirs(OUT, exist_ok=True)
keras.utils.set_random_seed(0)'''),
        new_markdown_cell("""## A fixed model

A small CNN on the digits. Its BatchNorms are folded into the convolutions **before** fixing
(`lite.fold_batchnorm`), so the exported kernels are exactly palette values. (Without folding,
`export_tflite` keeps each BatchNorm scale as a separate float MUL instead.)"""),
        new_code_cell('''x_train, x_test, y_train, y_test = load_digits_split(seed=0)
model = build_cnn(keras)
model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
model.fit(x_train, y_train, batch_size=32, epochs=FLOAT_EPOCHS, verbose=0)
folded = lite.fold_batchnorm(model)
print([layer.name for layer in folded.layers])

steps = int(np.ceil(len(x_train) / 32))
schedule = tfmot_wfn.StagedFixing(steps_per_stage=EPOCHS_PER_STAGE * steps)
fixed = tfmot_wfn.fix_weights(folded, fixing_schedule=schedule)
fixed.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=0.5),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
fixed.fit(x_train, y_train, batch_size=32, epochs=9 * EPOCHS_PER_STAGE + 1, verbose=0,
          callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
final = tfmot_wfn.strip_fixing(fixed)
keras_probabilities = final.predict(x_test, verbose=0)
print(f"fixed model: test accuracy {np.mean(keras_probabilities.argmax(-1) == y_test):.4f}, "
      f"{tfmot_wfn.unique_weights(final)} unique weight values")'''),
        new_markdown_cell("## Export: palette, int8 weight-only and float TFLite files"),
        new_code_cell('''palette_file = lite.export_tflite(final, f"{OUT}/model_palette.tflite")
weights_file = lite.export_tflite(final, f"{OUT}/model_int8_weight_only.tflite", mode="int8_weight_only")
dense_file = lite.export_tflite(final, f"{OUT}/model_dense.tflite", mode="dense")
print(palette_file)
print(weights_file)'''),
        new_markdown_cell("## The archive\n\nThe entropy-coded archive stores the palette indices "
                          "at close to their entropy; `load_archive` rebuilds the Keras model "
                          "bit-exactly."),
        new_code_cell('''archive = lite.save_archive(final, f"{OUT}/model.wfn")
restored = lite.load_archive(f"{OUT}/model.wfn")
same = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(restored.weights, final.weights))
print(f"{archive['indexed_weights']:,} palette-indexed weights at {archive['entropy_bits_per_weight']:.3f} bits each; "
      f"archive {archive['archive_bytes']:,} bytes (bound {archive['bound_bytes']:,.0f}); "
      f"restored bit-exactly: {same}")'''),
        new_markdown_cell("## Sizes"),
        new_code_cell('''def gz(path):
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), 9))


rows = [("float TFLite", dense_file.bytes, gz(dense_file.path)),
        ("palette TFLite", palette_file.bytes, gz(palette_file.path)),
        ("int8 weight-only", weights_file.bytes, gz(weights_file.path)),
        ("archive (.wfn)", archive["archive_bytes"], gz(f"{OUT}/model.wfn"))]
print(f"{'file':<16}{'bytes':>10}{'gzip -9':>10}{'vs float':>10}")
for name, size, gzipped in rows:
    print(f"{name:<16}{size:>10,}{gzipped:>10,}{size / dense_file.bytes:>10.3f}")'''),
        new_code_cell('''import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
names = [r[0] for r in rows]
positions = np.arange(len(rows))
ax.barh(positions + 0.2, [r[1] / 1024 for r in rows], height=0.4, label="file")
ax.barh(positions - 0.2, [r[2] / 1024 for r in rows], height=0.4, label="gzip -9")
ax.set_yticks(positions, names)
ax.invert_yaxis()
ax.set_xlabel("KiB")
ax.set_title(f"{archive['indexed_weights']:,} weights, palette of {palette_file.palette_size} values")
ax.legend()
plt.show()'''),
        new_markdown_cell("## Run it on the mobile interpreter\n\nThe palette file decoded once "
                          "at load (the default) or as stored (the `CAST + GATHER` ops run at "
                          "every call); the int8 weight-only file as stored."),
        new_code_cell('''for name, path, decode in (("palette, decoded", palette_file.path, True),
                          ("palette, stored", palette_file.path, False),
                          ("int8 weights", weights_file.path, False)):
    interpreter = lite.load_interpreter(path, decode=decode, num_threads=1)
    p = lite.run_interpreter(interpreter, x_test)
    print(f"{name:<16}: accuracy {np.mean(p.argmax(-1) == y_test):.4f}, same top-1 as "
          f"Keras: {bool(np.array_equal(p.argmax(-1), keras_probabilities.argmax(-1)))}, "
          f"max |diff| {np.abs(p - keras_probabilities).max():.1e} ({lite.runtime_name(interpreter)})")'''),
        new_markdown_cell("## Latency\n\nOne thread, batch 1, all files interleaved in one "
                          "process; the median `invoke()` time."),
        new_code_cell('''latency = compare_latency({"float": dense_file.path,
                           "palette, decoded at load": (palette_file.path, True),
                           "palette, as stored": (palette_file.path, False),
                           "int8 weights, as stored": (weights_file.path, False)},
                          num_threads=1, runs=LATENCY_RUNS)
print(latency)'''),
        new_markdown_cell("## Inspect the file\n\nThe palette, how every tensor is stored, and "
                          "why a tensor is not palette-indexed."),
        new_code_cell("print(lite.inspect(palette_file.path))"),
        new_code_cell('''from tfmot_wfn.apps import cli

cli.main(["inspect", f"{OUT}/model.wfn"])       # the same for the archive, from the CLI'''),
        new_markdown_cell("""## On the phone

`model_palette.tflite` runs on the stock LiteRT / TFLite interpreter on Android or iOS as it is.
To get float speed there as well, decode the palette once after loading (what
`lite.load_interpreter(decode=True)` does in Python), or ship the archive and rebuild the weights
on the device. Without a decoder of your own, ship `model_int8_weight_only.tflite`: the stock
interpreter runs it at float speed, with the float file's outputs."""),
    ]
    return cells


NOTEBOOKS = {"quickstart.ipynb": quickstart, "cifar10_resnet.ipynb": cifar10_resnet,
             "tflite_deployment.ipynb": tflite_deployment}


def build(name: str):
    nb = new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": [], "name": name}
    nb.metadata["accelerator"] = "GPU" if name == "cifar10_resnet.ipynb" else "None"
    return nb


def execute(nb, workdir: str, timeout: int = 1800):
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                            resources={"metadata": {"path": workdir}})
    client.execute()
    return nb


def relink(old, new):
    """`old` (a committed notebook, with outputs) with the badge cell and the install cell of `new`.

    Only the sources of those two cells change (the first cell and the first code
    cell); every output stays.
    """
    def marked(nb):
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        return [0, code[0]], [c.cell_type for c in nb.cells]

    (badge_at, install_at), _ = marked(old)
    if marked(new) != marked(old):
        raise ValueError("the notebook's cells differ from this script's: regenerate it "
                         "(--execute) instead of --relink")
    old.cells[badge_at].source = new.cells[badge_at].source
    old.cells[install_at].source = new.cells[install_at].source
    return old


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execute", action="store_true", help="run them and keep the outputs")
    parser.add_argument("--workdir", default=None, help="where they run (default: a temp folder)")
    parser.add_argument("--relink", action="store_true",
                        help="only rewrite the badge and install cells of the committed "
                             "notebooks from GITHUB_REPO, keeping their outputs")
    parser.add_argument("names", nargs="*", default=sorted(NOTEBOOKS))
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    for name in args.names:
        nb = build(name)
        if args.relink:
            nb = relink(nbformat.read(os.path.join(HERE, name), as_version=4), nb)
        elif args.execute:
            import tempfile

            workdir = args.workdir or tempfile.mkdtemp(prefix="wfn-notebook-")
            os.makedirs(workdir, exist_ok=True)
            start = time.time()
            execute(nb, workdir)
            print(f"executed {name} in {time.time() - start:.0f} s (in {workdir})", file=sys.stderr)
        nbformat.validate(nb)
        nbformat.write(nb, os.path.join(HERE, name))
        print(f"wrote notebooks/{name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
