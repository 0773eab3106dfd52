"""Command line: ``tfmot-wfn demo | fix | report | export | inspect``.

``demo`` runs the main job on built-in data; ``fix`` fine-tunes a saved Keras
classifier with the WFN schedule on a tfds dataset or an image folder,
checkpointing after every stage (``--resume`` continues); ``report`` describes a
model (text, ``report.json``, plots); ``export`` writes a fixed ``.keras`` model
as a palette TFLite file, a dense TFLite file or an entropy-coded archive;
``inspect`` describes a palette TFLite file or an archive.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Any, Callable, List, Optional

from tfmot_wfn.core.fixing_rules import AUTO_RULE, RULES


def _checked(convert: Callable[[str], Any], accepts: Callable[[Any], bool], requirement: str):
    """An argparse ``type``: `convert` the text, refusing values `accepts` rejects.

    Both failures are usage errors that say what was expected
    (``argument --distance: must be in (0, 1), got 1.5``).
    """
    expected = "an integer" if convert is int else "a number"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    return parse


#: A fraction strictly between 0 and 1 (the distance delta).
_unit_fraction = _checked(float, lambda v: 0.0 < v < 1.0, "in (0, 1)")


def _distance_or_auto(text: str):
    """``auto`` or a delta in (0, 1)."""
    return "auto" if text.strip().lower() == "auto" else _unit_fraction(text)


#: A fraction in [0, 1) (the held-out validation split; 0: none).
_unit_fraction_or_zero = _checked(float, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
#: A count of at least 1 (epochs, batch size, steps).
_positive_int = _checked(int, lambda v: v >= 1, ">= 1")
#: A finite number above 0 (the learning rate; NaN and infinity refused).
_positive_finite = _checked(float, lambda v: 0.0 < v < math.inf, "> 0 and finite")


def _fractions(text: str):
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated fractions such as 0.3,0.6,0.9,1, got {text!r}") from None
    if not values or any(not 0.0 < v <= 1.0 for v in values) or \
            any(b <= a for a, b in zip(values, values[1:])):
        raise argparse.ArgumentTypeError(
            f"fractions must be strictly increasing and in (0, 1], got {text!r}")
    return values


def _image_size(text: str):
    parts = text.lower().replace("x", ",").split(",")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, got {text!r}") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfmot-wfn",
        description="Weight Fixing Networks for Keras: few unique weights, low entropy, "
                    "powers of two, no accuracy loss.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="train a small CNN on scikit-learn digits and fix its weights",
        description="Train a small CNN with BatchNorm on scikit-learn's digits, run the "
                    "paper's ten-stage WFN schedule, print accuracy, unique values, entropy "
                    "and the palette, and write fixed_model.keras, report.json, the palette and dense "
                    "TFLite files and the .wfn archive.")
    demo.add_argument("--output", default="wfn_demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--distance", type=_unit_fraction, default=None,
                      help="delta, the allowed relative distance (default: tfmot_wfn.DEFAULT_DISTANCE)")
    demo.add_argument("--float-epochs", type=_positive_int, default=30,
                      help="epochs of float training (default: %(default)s)")
    demo.add_argument("--epochs-per-stage", type=_positive_int, default=2,
                      help="re-training epochs between fixing stages (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="print nothing")

    _add_fix_parser(sub)
    _add_report_parser(sub)

    export = sub.add_parser(
        "export", help="write a fixed .keras model as palette/int8_weight_only/float16/dense/int8 "
                       "TFLite or an archive",
        description="Export a model saved by tfmot_wfn (wrapped mid-training or stripped) as a "
                    "palette TFLite file (weights are indices into one shared palette), an "
                    "int8 weight-only or float16 TFLite file (exact int8 / float16 weights that "
                    "stock interpreters expand at load: float speed, no decoder), a dense float "
                    "TFLite file, an exact int8 TFLite file, or an entropy-coded archive "
                    "(.wfn).")
    export.add_argument("model", help="path of the .keras model")
    export.add_argument("--format", choices=(  # export_tflite's MODES (not imported: keras)
                            "palette", "int8_weight_only", "float16", "dense", "int8", "archive"),
                        default="palette", help="output format (default: %(default)s); "
                        "int8_weight_only / float16: weights stored as exact int8 codes with "
                        "per-channel scales (else float16) / as exact float16, run at float speed "
                        "by stock interpreters; int8: a fully integer TFLite file with exact "
                        "weights, calibrated on --representative-data, --dataset or --data-dir")
    export.add_argument("--output", default=None,
                        help="output path (default: the model path with _palette.tflite, "
                             "_int8_weight_only.tflite, _float16.tflite, _dense.tflite, "
                             "_int8.tflite or .wfn)")
    _add_calibration_options(export)
    export.add_argument("--quiet", action="store_true", help="print nothing")

    inspect = sub.add_parser(
        "inspect", help="describe a TFLite file (palette, int8 weight-only, float16, int8, "
                        "dense) or an archive",
        description="Print the file's form, its palette (if any), each tensor's storage (index "
                    "dtype or int8/float16/float32, elements, unique values, bytes), why each "
                    "constant is stored as it is, and whole-file totals.")
    inspect.add_argument("file", help="a .tflite file or a .wfn archive")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


FIX_EPILOG = """examples:
  tfmot-wfn fix resnet.keras --dataset cifar10 --epochs-per-stage 2 --output wfn_cifar10
  tfmot-wfn fix model.keras --dataset imagenette/320px-v2:train --image-size 160
  tfmot-wfn fix model.keras --data-dir photos/ --batch-size 32    # photos/<class>/*.jpg
  tfmot-wfn fix resnet.keras --dataset cifar10 --output wfn_cifar10 --resume
  tensorboard --logdir wfn_cifar10/logs

The model must take images and output class scores (softmax or logits); the
images are fed as floats in [0, 1] unless --normalize says otherwise, so use
the normalisation the model was trained with. Writes OUTPUT/fixed_model.keras
(plain Keras, palette weights), report.json, report.txt, plots/*.png, logs/
(TensorBoard) and checkpoints/ (the last completed stage, for --resume).
tfds datasets are downloaded once to ~/tensorflow_datasets (set TFDS_DATA_DIR to
change it); tensorflow-datasets comes with: pip install 'tfmot-wfn[data]'."""


def _add_calibration_options(export) -> None:
    source = export.add_mutually_exclusive_group()
    source.add_argument("--representative-data", metavar="FILE.npy|FILE.npz",
                        help="--format int8: inputs as fed to the model (the first 200 calibrate)")
    source.add_argument("--dataset", metavar="NAME[:SPLIT]",
                        help="--format int8: calibrate on a TensorFlow Datasets split, as in fix")
    source.add_argument("--data-dir", metavar="DIR",
                        help="--format int8: calibrate on images in class sub-folders, as in fix")
    export.add_argument("--normalize", choices=("unit", "symmetric", "imagenet", "none"),
                        default="unit", help="--dataset/--data-dir input scaling, as in fix "
                                             "(default: unit)")
    export.add_argument("--inference-type", choices=("float32", "int8", "uint8"),
                        default="float32", help="--format int8: input and output type "
                                                "(default: float32)")


def _add_fix_parser(sub) -> None:
    fix = sub.add_parser(
        "fix", help="fine-tune a saved Keras classifier with the WFN schedule on a tfds "
                    "dataset or an image folder",
        # RawDescriptionHelpFormatter (for the epilog's examples) does not wrap: lines here.
        description="Fine-tune a trained float Keras classifier with the Weight Fixing Networks\n"
                    "schedule: one training run per stage, a checkpoint after every stage\n"
                    "(--resume continues an interrupted run), then the stripped fixed model,\n"
                    "a report and plots.",
        epilog=FIX_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fix.add_argument("model", help="the trained float model (.keras)")
    source = fix.add_mutually_exclusive_group()
    source.add_argument("--dataset", metavar="NAME[:SPLIT]",
                        help="a TensorFlow Datasets name, optionally with the training split "
                             "(cifar10, imagenette/320px-v2, cifar10:train[:90%%])")
    source.add_argument("--data-dir", metavar="DIR",
                        help="images in class sub-folders (DIR/<class>/*.png); with train/ and "
                             "val/ (or validation/, test/) sub-folders those are the splits")
    fix.add_argument("--distance", type=_distance_or_auto, default=None,
                     help="delta, the allowed relative distance at the last stage "
                          "(default: tfmot_wfn.DEFAULT_DISTANCE), or 'auto': the largest delta "
                          "whose fixed model stays within --tolerance of the float model, "
                          "with a margin of one paired standard error "
                          "(tfmot_wfn.search_distance, with the job's schedule: at most 3x the "
                          "time of one run; then the job's run at that delta)")
    fix.add_argument("--rule", choices=sorted(RULES) + [AUTO_RULE], default=None,
                     help="the fixing rule: which weights a greedy step may fix to its centre "
                          "(default: auto, gentle for a network with depthwise "
                          "convolutions, else bounded_third; 'paper' is the paper's text)")
    fix.add_argument("--int8-exact", action="store_true", default=None,
                     help="constrain every kernel channel to exact int8 codes times one power of "
                          "two (for export --format int8 without rounding)")
    fix.add_argument("--tolerance", type=_unit_fraction_or_zero, default=None,
                     help="with --distance auto: the accuracy drop allowed, absolute "
                          "(default 0.005 = half a point)")
    fix.add_argument("--search-by-batches", action="store_true", default=None,
                     help="with --distance auto: count the search's budget in training batches "
                          "only, not also in seconds, so that it chooses the same delta on any "
                          "machine (it may then take longer than 3 runs)")
    fix.add_argument("--fractions", type=_fractions, default=None, metavar="F1,F2,...",
                     help="the schedule: cumulative fixed fractions per stage (default: the "
                          "paper's 0.3,0.6,0.8,0.9,0.95,0.975,0.99,0.9975,0.999,1)")
    fix.add_argument("--epochs-per-stage", type=_positive_int, default=None,
                     help="training epochs after each stage but the last (default: 1)")
    fix.add_argument("--final-epochs", type=_positive_int, default=None,
                     help="training epochs after the last stage (default: 1)")
    fix.add_argument("--batch-size", type=_positive_int, default=None, help="default: 64")
    fix.add_argument("--learning-rate", type=_positive_finite, default=None,
                     help="Adam learning rate of the fine-tuning (default: 1e-4)")
    fix.add_argument("--image-size", type=_image_size, default=None, metavar="SIZE|HxW",
                     help="input size (default: the model's input size, else the dataset's)")
    fix.add_argument("--normalize", choices=("unit", "symmetric", "imagenet", "none"),
                     default=None, help="input scaling: unit [0,1] (default), symmetric "
                                        "[-1,1], imagenet mean/std, none (0..255)")
    fix.add_argument("--no-augment", action="store_true",
                     help="no random crop / flip of the training images")
    fix.add_argument("--eval-split", default=None,
                     help="tfds evaluation split (default: test, else validation; 'none': none)")
    fix.add_argument("--validation-split", type=_unit_fraction_or_zero, default=None,
                     help="--data-dir without train/ and val/: fraction held out for "
                          "evaluation (default: 0.2)")
    fix.add_argument("--steps-per-epoch", type=_positive_int, default=None,
                     help="train at most this many batches per epoch (default: the whole split)")
    fix.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    fix.add_argument("--output", default=None,
                     help="output folder (default: wfn_<model name>)")
    fix.add_argument("--log-dir", default=None,
                     help="TensorBoard folder (default: OUTPUT/logs; 'none': no logs)")
    fix.add_argument("--keep-checkpoints", action="store_true",
                     help="keep every stage's checkpoint, not only the last")
    fix.add_argument("--resume", action="store_true",
                     help="continue the run in --output from its last completed stage")
    fix.add_argument("--overwrite", action="store_true",
                     help="start again in an --output folder that holds a run")
    fix.add_argument("--quiet", action="store_true", help="print nothing, no progress bars")


def _add_report_parser(sub) -> None:
    report = sub.add_parser(
        "report", help="describe a fixed model: text, report.json and plots",
        description="Print tfmot_wfn.report of a .keras model (stripped, or saved while "
                    "fixing): palette with each value as signed powers of two, unique "
                    "values, entropy, per-layer numbers; write it as report.txt and "
                    "report.json, and plots "
                    "(palette histogram, per-layer unique values, and the stages when the "
                    "model comes from `tfmot-wfn fix`).")
    report.add_argument("model", help="path of the .keras model")
    report.add_argument("--output", default=None,
                        help="folder for report.txt, report.json and plots "
                             "(default: <model>_report)")
    report.add_argument("--history", default=None, metavar="JSON",
                        help="report.json or state.json of a `tfmot-wfn fix` run for the stage "
                             "plot (default: looked for next to the model)")
    report.add_argument("--no-plots", action="store_true", help="do not write plots")
    report.add_argument("--json", action="store_true", help="print JSON instead of text")
    report.add_argument("--quiet", action="store_true", help="print nothing")


def _fix(args) -> int:
    from tfmot_wfn.apps import fix_job

    output = args.output or "wfn_" + os.path.splitext(os.path.basename(args.model))[0]
    given = {
        "dataset": args.dataset, "data_dir": args.data_dir, "distance": args.distance,
        "tolerance": args.tolerance, "search_by_batches": args.search_by_batches,
        "rule": args.rule, "int8_exact": args.int8_exact,
        "fractions": args.fractions, "epochs_per_stage": args.epochs_per_stage,
        "final_epochs": args.final_epochs, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "image_size": None if args.image_size is None else list(args.image_size),
        "normalization": args.normalize, "steps_per_epoch": args.steps_per_epoch,
        "seed": args.seed, "validation_split": args.validation_split,
        "log_dir": (None if args.log_dir is None
                    else "" if args.log_dir.lower() == "none" else args.log_dir),
        "eval_split": (None if args.eval_split is None
                       else None if args.eval_split.lower() == "none" else args.eval_split),
    }
    given = {k: v for k, v in given.items() if v is not None}
    if args.eval_split is not None and args.eval_split.lower() == "none":
        given["eval_split"] = None
    if args.no_augment:
        given["augment"] = False
    if args.keep_checkpoints:
        given["keep_checkpoints"] = True
    verbose = 0 if args.quiet else 1
    if args.resume:
        if args.overwrite:
            raise fix_job.FixJobError("--resume and --overwrite exclude each other")
        fix_job.resume_fix_job(output, verbose=verbose, overrides=given)
        return 0
    config = fix_job.FixJobConfig(model_path=args.model, output=output, verbose=verbose, **given)
    fix_job.run_fix_job(config, overwrite=args.overwrite)
    return 0


def _history_next_to(model_path: str, explicit: Optional[str]):
    """The stage list of a `tfmot-wfn fix` run: from --history, or the run folder of the model."""
    candidates = [explicit] if explicit else []
    folder = os.path.dirname(os.path.abspath(model_path))
    candidates += [os.path.join(folder, "report.json"), os.path.join(folder, "state.json"),
                   os.path.join(os.path.dirname(folder), "state.json")]
    for path in candidates:
        if path and os.path.isfile(path):
            try:
                with open(path) as f:
                    stages = json.load(f).get("stages")
            except (OSError, ValueError, AttributeError):
                stages = None
            if stages:
                match = re.fullmatch(r"stage_(\d+)\.keras", os.path.basename(model_path))
                if match:  # a checkpoint: the stages up to it
                    stages = [s for s in stages if s.get("stage", 0) <= int(match.group(1))]
                return stages, path
        elif explicit and path == explicit:
            raise FileNotFoundError(f"no such file: {explicit}")
    return None, None


def _report(args) -> int:
    if not os.path.isfile(args.model):
        raise SystemExit(f"tfmot-wfn report: no such file: {args.model}")
    import tfmot_wfn
    from tfmot_wfn import lite

    say = (lambda *a: None) if args.quiet else print
    model = lite.load_keras_model(args.model)
    rep = tfmot_wfn.report(model)
    output = args.output or os.path.splitext(args.model)[0] + "_report"
    os.makedirs(output, exist_ok=True)
    payload = dict(model=args.model, **rep.to_dict())
    stages, history_path = _history_next_to(args.model, args.history)
    if stages:
        payload["stages"] = stages
        payload["stages_from"] = history_path
    plots = {}
    if not args.no_plots:
        from tfmot_wfn.apps import plot

        plots = plot.save_all(os.path.join(output, "plots"), rep, history=stages)
        payload["plots"] = plots
    from tfmot_wfn.apps.hardware_section import hardware_cost_section
    payload["hardware_cost"], hardware_text = hardware_cost_section(model, output, not args.no_plots)
    from tfmot_wfn.utils.atomic_files import write_bytes_atomically, write_json_atomically

    # Atomic: a report interrupted halfway never replaces the last whole one.
    write_json_atomically(os.path.join(output, "report.json"), payload)
    write_bytes_atomically(os.path.join(output, "report.txt"), (str(rep) + "\n").encode())
    if args.json:
        say(json.dumps(payload, indent=2))
    else:
        say(f"{args.model}:")
        say(str(rep))
        say(hardware_text)
        say(f"wrote {os.path.join(output, 'report.txt')}, {os.path.join(output, 'report.json')}"
            + (f" and {len(plots)} plots in {os.path.join(output, 'plots')}/" if plots else ""))
    return 0


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:  # noqa: SLF001 - argparse keeps sub-parsers here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return action.choices[name]
    raise KeyError(name)  # pragma: no cover


def _default_output(model_path: str, fmt: str) -> str:
    stem = os.path.splitext(model_path)[0]
    return stem + (".wfn" if fmt == "archive" else f"_{fmt}.tflite")


def _export(args) -> int:
    if not os.path.isfile(args.model):
        raise SystemExit(f"tfmot-wfn export: no such file: {args.model}")
    output = args.output or _default_output(args.model, args.format)
    if os.path.exists(output) and os.path.samefile(output, args.model):
        raise SystemExit(f"tfmot-wfn export: --output {output} is the model itself; writing "
                         "there would replace it. Choose another --output")
    say = (lambda *a: None) if args.quiet else print
    from tqdm.auto import tqdm

    from tfmot_wfn import lite

    what = {"archive": "entropy-coding the archive", "dense": "converting to float TFLite",
            "palette": "converting and palette-encoding",
            "float16": "converting and storing exact float16 weights",
            "int8_weight_only": "converting and storing exact int8 weights",
            "int8": "calibrating and converting to int8"}[args.format]
    with tqdm(total=2, desc=f"loading {os.path.basename(args.model)}", unit="step",
              disable=args.quiet, leave=False) as bar:
        model = lite.load_keras_model(args.model)
        bar.update(1)
        bar.set_description(what)
        if args.format == "archive":
            info = lite.save_archive(model, output)
        elif args.format == "int8":
            result = _export_int8(args, model, output)
        else:
            result = lite.export_tflite(model, output, mode=args.format)
        bar.update(1)
    if args.format == "archive":
        say(f"wrote {output}: {info['archive_bytes']} bytes; {info['indexed_weights']} "
            f"palette-indexed weights at {info['entropy_bits_per_weight']:.3f} bits each "
            f"(entropy bound {info['bound_bytes']:.0f} bytes)")
    else:
        say(str(result))
    return 0


def _export_int8(args, model, output):
    from tfmot_wfn import lite
    from tfmot_wfn.apps.calibration_data import representative_data

    if not (args.representative_data or args.dataset or args.data_dir):
        raise ValueError("--format int8 needs calibration inputs: --representative-data "
                         "FILE.npy|.npz, --dataset NAME or --data-dir DIR")
    data = representative_data(model, path=args.representative_data,
                               dataset=args.dataset, data_dir=args.data_dir,
                               normalization=args.normalize)
    return lite.export_tflite(model, output, mode="int8", representative_data=data,
                              inference_input_type=args.inference_type,
                              inference_output_type=args.inference_type)


def _is_archive(path: str) -> bool:
    from tfmot_wfn.archive import wfn_format as archive

    with open(path, "rb") as f:
        head = f.read(len(archive.MAGIC))
    return head == archive.MAGIC


def _inspect(args) -> int:
    if not os.path.isfile(args.file):
        raise SystemExit(f"tfmot-wfn inspect: no such file: {args.file}")
    if _is_archive(args.file):
        from tfmot_wfn.archive import inspection as archive_inspection, wfn_decoding as archive

        contents = archive.read_archive(args.file)
        summary = archive_inspection.describe(contents, os.path.getsize(args.file))
        print(json.dumps(summary, indent=2) if args.json
              else archive_inspection.format_description(summary))
        return 0
    from tfmot_wfn import lite

    report = lite.inspect(args.file)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else str(report))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "fix" and not args.resume and not (args.dataset or args.data_dir):
        _subparser(parser, "fix").error("one of --dataset or --data-dir is required "
                                        "(or --resume to continue a run)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    if args.command == "demo":
        from tfmot_wfn.apps.demo import run_demo

        run_demo(output_dir=args.output, distance=args.distance, float_epochs=args.float_epochs,
                 epochs_per_stage=args.epochs_per_stage, seed=args.seed,
                 verbose=0 if args.quiet else 1)
        return 0
    try:
        if args.command == "fix":
            try:
                return _fix(args)
            except KeyboardInterrupt:
                print("\ntfmot-wfn fix: interrupted; continue from the last completed stage with "
                      "the same command and --resume", file=sys.stderr)
                return 130
        if args.command == "report":
            return _report(args)
        if args.command == "export":
            if args.format != "int8" and (args.representative_data or args.dataset
                                          or args.data_dir):
                _subparser(parser, "export").error(
                    "--representative-data/--dataset/--data-dir calibrate --format int8 only")
            if args.format != "int8" and args.inference_type != "float32":
                _subparser(parser, "export").error(
                    "--inference-type sets the input and output type of --format int8 only")
            return _export(args)
        if args.command == "inspect":
            return _inspect(args)
    except (ValueError, TypeError, OSError, ImportError) as error:  # bad input: one line, exit 1
        print(f"tfmot-wfn {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
