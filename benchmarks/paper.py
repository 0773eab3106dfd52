"""The paper's ImageNet protocol on a pretrained Keras ResNet-50, for users with a GPU.

    python benchmarks/paper.py                 # ImageNet from tfds (prepared by you), GPU
    python benchmarks/paper.py --smoke         # tfds mock data, weights=None, tiny sizes (CI)

Protocol (Subia-Waud & Dasmahapatra, ECCV 2022): `keras.applications.ResNet50(weights="imagenet")`,
the paper's ten-stage schedule (0.3 ... 1.0), 3 epochs of re-training a stage, Adam at 2e-5
with gradient clipping 0.5, no weight decay, deltas 0.0075 / 0.01 / 0.015. It writes a table
in the paper's form: top-1, unique values and entropy over all fixed parameters, with and
without the value 0 (the paper's README tables drop 0), next to the paper's own numbers.

ImageNet (`imagenet2012` in tfds) cannot be downloaded automatically: download the ILSVRC2012
train and validation tars yourself and place them in tfds's manual folder
(`~/tensorflow_datasets/downloads/manual/`), as the tfds catalogue page for imagenet2012 says.
A full run fixes 25.6M weights through 28 epochs of ImageNet per delta: days on one GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The paper's Table (ResNet-50, ImageNet): delta -> (top-1 %, unique values, entropy bits).
PAPER_RESNET50 = {0.0075: (76.0, 261, 4.11), 0.01: (75.4, 199, 4.00), 0.015: (75.1, 125, 3.55)}
DELTAS = (0.0075, 0.01, 0.015)


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true",
                   help="tfds mock data, weights=None, 32x32 images, 1 step a stage, one delta")
    p.add_argument("--deltas", type=float, nargs="+", default=None)
    p.add_argument("--epochs-per-stage", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--data-dir", default=None, help="tfds data_dir (default: tfds's)")
    p.add_argument("--output", default=os.path.join(HERE, "PAPER.md"),
                   help="the markdown table (and a .json beside it)")
    return p.parse_args(argv)


def _pipelines(args):
    """(train, validation, steps per epoch) as batches of ResNet-50-preprocessed images."""
    import tensorflow as tf

    from tfmot_wfn import data
    from tfmot_wfn.keras.compat import keras

    size = 32 if args.smoke else 224
    imagenet = data.from_tfds("imagenet2012", split="train", eval_split="validation",
                              image_size=size, batch_size=args.batch_size, normalization="none",
                              data_dir=args.data_dir, download=not args.smoke,
                              cache=False if not args.smoke else "auto")
    preprocess = keras.applications.resnet50.preprocess_input

    def prepared(ds):
        return ds.map(lambda x, y: (preprocess(tf.cast(x, tf.float32)), y),
                      num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    return (prepared(imagenet.train_dataset(seed=0)), prepared(imagenet.eval_dataset()),
            imagenet.steps_per_epoch)


def _top1(model, dataset) -> float:
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return float(model.evaluate(dataset, verbose=0)[1])


def _fix_one(args, float_model, train, steps_per_epoch: int, delta: float):
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras

    stage_steps = 1 if args.smoke else args.epochs_per_stage * steps_per_epoch
    schedule = tfmot_wfn.StagedFixing(steps_per_stage=stage_steps)
    fixed = tfmot_wfn.fix_weights(float_model, fixing_schedule=schedule, distance=delta)
    fixed.compile(optimizer=keras.optimizers.Adam(args.learning_rate, clipnorm=0.5),
                  loss="sparse_categorical_crossentropy")
    stages = len(schedule.fractions)
    fixed.fit(train.repeat(), epochs=stages, steps_per_epoch=stage_steps, verbose=0,
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=1)])
    return tfmot_wfn.strip_fixing(fixed)


def _row(delta: float, model, top1: float, seconds: float) -> dict:
    import tfmot_wfn

    return {"delta": delta, "top1": top1,
            "unique": int(tfmot_wfn.unique_weights(model)),
            "unique_nonzero": int(tfmot_wfn.unique_weights(model, include_zero=False)),
            "entropy": float(tfmot_wfn.weight_entropy(model)),
            "entropy_nonzero": float(tfmot_wfn.weight_entropy(model, include_zero=False)),
            "seconds": seconds}


def table(rows, float_top1: float, smoke: bool) -> str:
    """The paper-form markdown table of ``rows`` (dicts from `_row`)."""
    lines = ["# WFN on ImageNet, ResNet-50 (the paper's protocol)", "",
             ("**Smoke run on tfds mock data with random weights: the numbers mean nothing.**"
              if smoke else "Pretrained keras.applications.ResNet50, ImageNet validation split."),
             "", f"Float top-1: {100 * float_top1:.2f}%", "",
             "| delta | top-1 % | unique (with 0) | unique (no 0) | entropy bits (with 0) | "
             "entropy bits (no 0) | paper: top-1 / unique / entropy |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = PAPER_RESNET50.get(r["delta"])
        paper_text = f"{paper[0]} / {paper[1]} / {paper[2]}" if paper else "-"
        lines.append(f"| {r['delta']:g} | {100 * r['top1']:.2f} | {r['unique']} | "
                     f"{r['unique_nonzero']} | {r['entropy']:.2f} | {r['entropy_nonzero']:.2f} | "
                     f"{paper_text} |")
    lines += ["", "Unique values and entropy count every fixed parameter (kernels, biases, "
              "BatchNorm gamma/beta); the paper's README tables drop the value 0."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = _parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfmot_wfn.keras.compat import keras

    deltas = args.deltas or ((0.015,) if args.smoke else DELTAS)
    if args.smoke:
        args.batch_size = min(args.batch_size, 4)
        import tensorflow_datasets as tfds

        mock = tfds.testing.mock_data(num_examples=8)
    else:
        mock = contextlib.nullcontext()
    with mock:
        train, validation, steps_per_epoch = _pipelines(args)
        weights = None if args.smoke else "imagenet"
        input_shape = (32, 32, 3) if args.smoke else (224, 224, 3)
        float_model = keras.applications.ResNet50(weights=weights, input_shape=input_shape)
        float_top1 = _top1(float_model, validation)
        print(f"float top-1: {float_top1:.4f}")
        rows = []
        for delta in deltas:
            start = time.time()
            fixed = _fix_one(args, float_model, train, steps_per_epoch, delta)
            rows.append(_row(delta, fixed, _top1(fixed, validation), time.time() - start))
            print(json.dumps(rows[-1]))
    text = table(rows, float_top1, args.smoke)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.output)[0] + ".json", "w") as f:
        json.dump({"float_top1": float_top1, "rows": rows, "smoke": args.smoke}, f, indent=2)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
