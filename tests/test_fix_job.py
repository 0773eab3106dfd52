"""`tfmot-wfn fix` / `report` (tfmot_wfn.apps.fix_job) and the TensorBoard summaries (keras/summaries.py).

The data are offline: PNG folders written here from scikit-learn's digits, and
tfds mock data for the tfds path. The interrupted-and-resumed run is compared
with an uninterrupted run of the same settings, bit for bit.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

import keras
import tfmot_wfn
from tfmot_wfn.apps import cli, fix_job
from tfmot_wfn.keras import summaries
from tfmot_wfn.keras.compat import tf
from tfmot_wfn.keras.network import wrappers_of

FRACTIONS = "0.5,0.8,0.95,1"
RUN_FLAGS = ["--fractions", FRACTIONS, "--batch-size", "32", "--learning-rate", "1e-3",
             "--no-augment", "--keep-checkpoints", "--quiet"]


# ------------------------------------------------------------------ fixtures
def _events(folder):
    """{tag: [(step, plugin, value as numpy)]} of every event file under `folder`."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"),
                                 recursive=True)):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                out.setdefault(v.tag, []).append(
                    (event.step, v.metadata.plugin_data.plugin_name, tf.make_ndarray(v.tensor)))
    return out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """Digits as PNG folders (train/, val/), a trained float CNN, and an uninterrupted CLI run."""
    from sklearn.datasets import load_digits

    from tfmot_wfn.apps.demo import build_cnn

    root = tmp_path_factory.mktemp("fixjob")
    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))[:330]
    for n, i in enumerate(order):
        split = "train" if n < 250 else "val"
        folder = root / "digits" / split / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(images[i][..., None]))
    keras.utils.set_random_seed(0)
    model = build_cnn(keras)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    x = (images[order[:250]] / 255.0).astype("float32")[..., None]
    model.fit(x, digits.target[order[:250]], epochs=15, batch_size=32, verbose=0)
    model_path = str(root / "float.keras")
    model.save(model_path)
    out = str(root / "reference")
    assert cli.main(["fix", model_path, "--data-dir", str(root / "digits"), "--output", out]
                    + RUN_FLAGS) == 0
    return {"root": root, "model": model_path, "data": str(root / "digits"), "out": out}


def _load(path):
    with tfmot_wfn.fixing_scope():
        return keras.models.load_model(path)


# ------------------------------------------------------------- the fix job
def test_fix_writes_model_report_plots_checkpoints_and_logs(digits_run):
    out = digits_run["out"]
    report = json.loads(open(os.path.join(out, "report.json")).read())
    final = _load(os.path.join(out, "fixed_model.keras"))
    assert not wrappers_of(final)  # plain Keras layers
    values = np.concatenate([w.numpy().ravel() for layer in final.layers for w in layer.weights
                             if "moving" not in w.path])
    assert report["total_weights"] == values.size and report["fixed_fraction"] == 1.0
    assert [p["value"] for p in report["palette"]] == sorted(np.unique(values).tolist())
    assert [s["fraction"] for s in report["stages"]] == [0.5, 0.8, 0.95, 1.0]
    assert [s["stage"] for s in report["stages"]] == [1, 2, 3, 4]
    assert report["stages"][-1]["fixed"] == report["total_weights"]
    assert report["data"].startswith("dir:") and report["from_logits"] is False
    # The default rule="auto" is written as the rule it chose for this CNN (no depthwise layers).
    assert report["settings"]["rule"] == report["rule"] == "bounded_third"
    assert 0.5 < report["float_accuracy"] and report["fixed_accuracy"] > report["float_accuracy"] - 0.1
    for name in ("palette_histogram.png", "stage_progress.png", "layer_unique_values.png"):
        assert open(os.path.join(out, "plots", name), "rb").read(4) == b"\x89PNG"
    assert "palette" in open(os.path.join(out, "report.txt")).read()
    state = fix_job.read_state(out)
    assert state["finished"] and state["completed_stages"] == 4
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [
        f"stage_{k:02d}.keras" for k in (1, 2, 3, 4)]
    # The last checkpoint is the wrapped model at the end: fully fixed, same palette.
    last = _load(os.path.join(out, "checkpoints", "stage_04.keras"))
    assert tfmot_wfn.fixed_fraction(last) == 1.0
    np.testing.assert_array_equal(tfmot_wfn.palette(last), tfmot_wfn.palette(final))
    # TensorBoard: the FixingSummaries scalars, the palette histogram, per-layer fractions,
    # training and evaluation metrics, one point per epoch.
    events = _events(os.path.join(out, "logs"))
    assert {"fixing/fixed_fraction", "fixing/palette_usage", "train/loss", "eval/accuracy",
            "fixing/layer_fixed_fraction/conv1", "fixing/layer_fixed_fraction/classifier"} <= set(events)
    steps, plugins, hist = zip(*events["fixing/palette_usage"])
    assert list(steps) == [0, 1, 2, 3] and set(plugins) == {"histograms"}
    assert hist[-1].shape == (len(report["palette"]), 3)
    assert hist[-1][:, 2].sum() == report["total_weights"]
    layer = [v for _, _, v in events["fixing/layer_fixed_fraction/conv1"]]
    assert float(layer[-1]) == 1.0 and float(layer[0]) < 1.0
    # Written once per epoch (by FixingSummaries only, not again by the job's own writer).
    for tag in ("fixing/fixed_fraction", "fixing/layer_fixed_fraction/conv1", "train/loss"):
        assert [step for step, _, _ in events[tag]] == [0, 1, 2, 3], tag


def test_interrupted_run_resumes_from_the_last_stage_and_ends_like_an_uninterrupted_one(digits_run):
    out = str(digits_run["root"] / "interrupted")

    class Interrupt(keras.callbacks.Callback):
        """Stops the third stage's training in its middle, as Ctrl-C would."""

        def __init__(self):
            super().__init__()
            self.fits = 0

        def on_train_begin(self, logs=None):
            self.fits += 1

        def on_train_batch_end(self, batch, logs=None):
            if self.fits == 3 and batch == 3:
                raise KeyboardInterrupt

    config = fix_job.FixJobConfig(
        model_path=digits_run["model"], data_dir=digits_run["data"], output=out,
        fractions=tuple(float(f) for f in FRACTIONS.split(",")), batch_size=32,
        learning_rate=1e-3, augment=False, keep_checkpoints=True, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        fix_job.run_fix_job(config, callbacks=[Interrupt()])
    state = fix_job.read_state(out)
    assert state["completed_stages"] == 2 and not state["finished"]
    assert not os.path.exists(os.path.join(out, "fixed_model.keras"))
    at_interruption = _load(os.path.join(out, state["checkpoint"]))
    masks = [m for w in wrappers_of(at_interruption) for m in w.mask_numpy()]
    fixed_then = [v[m] for w, ms in ((w, w.mask_numpy()) for w in wrappers_of(at_interruption))
                  for v, m in zip(w.effective_numpy(), ms)]

    # The same command with --resume (the data source may be left out).
    assert cli.main(["fix", digits_run["model"], "--output", out, "--quiet", "--resume"]) == 0
    reference, resumed = digits_run["out"], out
    # Every stage's checkpoint, and the final model, equal the uninterrupted run's bit for bit:
    # weights, masks, fixed values, palette, step (the data order and augmentation of a stage
    # depend only on (seed, stage), and the optimizer state is in the checkpoint).
    for k in (1, 2, 3, 4):
        a = _load(os.path.join(reference, "checkpoints", f"stage_{k:02d}.keras"))
        b = _load(os.path.join(resumed, "checkpoints", f"stage_{k:02d}.keras"))
        assert len(a.weights) == len(b.weights)
        for x, y in zip(a.weights, b.weights):
            assert np.array_equal(x.numpy(), y.numpy()), f"stage {k}: {x.path} differs"
    final = _load(os.path.join(resumed, "fixed_model.keras"))
    for x, y in zip(_load(os.path.join(reference, "fixed_model.keras")).weights, final.weights):
        assert np.array_equal(x.numpy(), y.numpy())
    # Fully fixed; the weights fixed before the interruption kept their values.
    resumed_last = _load(os.path.join(resumed, "checkpoints", "stage_04.keras"))
    assert tfmot_wfn.fixed_fraction(resumed_last) == 1.0
    now = [v for w in wrappers_of(resumed_last) for v in w.effective_numpy()]
    for before, mask, after in zip(fixed_then, masks, now):
        np.testing.assert_array_equal(after[mask], before)
    a = json.load(open(os.path.join(reference, "report.json")))
    b = json.load(open(os.path.join(resumed, "report.json")))
    assert a["palette"] == b["palette"]
    assert [s["stage"] for s in b["stages"]] == [1, 2, 3, 4]
    assert [s["eval_accuracy"] for s in a["stages"]] == [s["eval_accuracy"] for s in b["stages"]]
    # Resuming a finished run trains nothing and returns its report.
    again = fix_job.resume_fix_job(out, verbose=0)
    assert again["palette"] == b["palette"]


def test_fix_on_tfds_mock_data_with_a_logits_model(tmp_path, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))  # logits
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    out = str(tmp_path / "run")
    with tfds.testing.mock_data(num_examples=24):
        assert cli.main(["fix", path, "--dataset", "cifar10:train", "--fractions", "0.5,1",
                         "--batch-size", "8", "--steps-per-epoch", "2", "--output", out]) == 0
    printed = capsys.readouterr().out
    for text in ("data: tfds:cifar10", "logits out", "stage 1/2", "stage 2/2", "unique values",
                 "wrote " + out):
        assert text in printed
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["from_logits"] is True and report["data"] == "tfds:cifar10"
    assert report["settings"]["dataset"] == "cifar10:train"
    assert report["fixed_fraction"] == 1.0 and len(report["stages"]) == 2
    assert not glob.glob(os.path.join(out, "checkpoints", "stage_01.keras"))  # only the last kept


def test_quiet_prints_nothing(digits_run, tmp_path, capsys):
    out = str(tmp_path / "quiet")
    assert cli.main(["fix", digits_run["model"], "--data-dir", digits_run["data"], "--output", out,
                     "--fractions", "1", "--steps-per-epoch", "1", "--log-dir", "none",
                     "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "batch" not in captured.err and "%" not in captured.err
    assert not os.path.exists(os.path.join(out, "logs"))
    assert json.load(open(os.path.join(out, "report.json")))["log_dir"] is None


def test_fix_refuses_bad_starts_clearly(digits_run, tmp_path, capsys):
    model, data_dir, out = digits_run["model"], digits_run["data"], digits_run["out"]
    # A folder that holds a run: --resume, --overwrite or another folder.
    assert cli.main(["fix", model, "--data-dir", data_dir, "--output", out, "--quiet"]) == 1
    assert "already holds a finished run" in capsys.readouterr().err
    # --overwrite in the run's folder, fixing that run's own fixed model again: it would be
    # removed before it is read; refused, and nothing is removed.
    final = os.path.join(out, fix_job.FINAL_MODEL)
    before = sorted(os.listdir(out))
    assert cli.main(["fix", final, "--data-dir", data_dir, "--output", out, "--overwrite",
                     "--quiet"]) == 1
    assert "would remove" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == before and os.path.isfile(final)
    # Nothing to resume.
    assert cli.main(["fix", model, "--output", str(tmp_path / "none"), "--resume", "--quiet"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    # Resuming with another schedule setting.
    state_dir = str(tmp_path / "partial")
    os.makedirs(state_dir)
    state = fix_job.read_state(out)
    state.update(finished=False)
    with open(os.path.join(state_dir, fix_job.STATE_FILE), "w") as f:
        json.dump(state, f)
    assert cli.main(["fix", model, "--output", state_dir, "--resume", "--batch-size", "8",
                     "--quiet"]) == 1
    assert "batch_size was 32 there and 8 now" in capsys.readouterr().err
    # The model's outputs do not match the classes.
    small = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    small.save(str(tmp_path / "three.keras"))
    assert cli.main(["fix", str(tmp_path / "three.keras"), "--data-dir", data_dir, "--output",
                     str(tmp_path / "o3"), "--quiet"]) == 1
    assert "outputs 3 scores but dir:" in capsys.readouterr().err
    # A checkpoint is not a float model.
    checkpoint = os.path.join(out, "checkpoints", "stage_01.keras")
    assert cli.main(["fix", checkpoint, "--data-dir", data_dir, "--output", str(tmp_path / "o4"),
                     "--quiet"]) == 1
    assert "saved while fixing" in capsys.readouterr().err
    # No data source: a usage error.
    with pytest.raises(SystemExit) as info:
        cli.main(["fix", model])
    assert info.value.code == 2 and "--dataset or --data-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["fix", model, "--dataset", "cifar10", "--data-dir", data_dir])
    assert info.value.code == 2
    for bad in (["--fractions", "0.5,0.4"], ["--fractions", "x"], ["--learning-rate", "0"],
                ["--image-size", "0"], ["--epochs-per-stage", "0"]):
        with pytest.raises(SystemExit) as info:
            cli.main(["fix", model, "--data-dir", data_dir] + bad)
        assert info.value.code == 2
    capsys.readouterr()


def test_fix_and_report_have_help(capsys):
    for command, words in (("fix", ("--dataset", "--data-dir", "--distance", "--epochs-per-stage",
                                    "--batch-size", "--learning-rate", "--image-size", "--output",
                                    "--resume", "--quiet", "--fractions", "tensorboard")),
                           ("report", ("--output", "--history", "--json", "--no-plots"))):
        with pytest.raises(SystemExit) as info:
            cli.main([command, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        for word in words:
            assert word in text, (command, word)


def test_report_prints_and_writes_json_and_plots(digits_run, tmp_path, capsys):
    path = os.path.join(digits_run["out"], "fixed_model.keras")
    out = str(tmp_path / "rep")
    assert cli.main(["report", path, "--output", out]) == 0
    printed = capsys.readouterr().out
    assert "unique values" in printed and "palette" in printed and "layers:" in printed
    written = json.load(open(os.path.join(out, "report.json")))
    expected = tfmot_wfn.report(_load(path)).to_dict()
    text = open(os.path.join(out, "report.txt")).read()
    assert text == str(tfmot_wfn.report(_load(path))) + "\n" and text.strip() in printed
    assert written["palette"] == expected["palette"] and written["layers"] == expected["layers"]
    # The run's report.json next to the model provides the stages for the stage plot.
    assert len(written["stages"]) == 4
    assert set(written["plots"]) == {"palette", "layers", "stages"}
    for p in written["plots"].values():
        assert open(p, "rb").read(4) == b"\x89PNG"
    # A checkpoint (wrapped model) works too; --json prints the dict.
    checkpoint = os.path.join(digits_run["out"], "checkpoints", "stage_02.keras")
    assert cli.main(["report", checkpoint, "--json", "--no-plots", "--output", out]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fixed_fraction"] == pytest.approx(0.8, abs=0.01) and "plots" not in data
    assert [s["stage"] for s in data["stages"]] == [1, 2]  # the run's stages up to this one
    with pytest.raises(SystemExit, match="no such file"):
        cli.main(["report", str(tmp_path / "missing.keras")])


# ----------------------------------------------------------------- summaries
def _partly_fixed():
    import keras_helpers as kh

    fixed = tfmot_wfn.fix_weights(kh.dense_model(batchnorm=True))
    return fixed


def test_palette_buckets():
    b = summaries.palette_buckets(np.array([-0.5, 0.0, 0.25]), np.array([3, 1, 2]))
    np.testing.assert_allclose(b, [[-0.75, -0.25, 3], [-0.25, 0.125, 1], [0.125, 0.375, 2]])
    one = summaries.palette_buckets(np.array([0.5]), np.array([7]))
    assert one.shape == (1, 3) and one[0, 0] < 0.5 < one[0, 1] and one[0, 2] == 7
    assert summaries.palette_buckets(np.zeros(0), np.zeros(0)).shape == (0, 3)


def test_summaries_write_tensorboard_histogram_and_layer_scalars(tmp_path):
    fixed = _partly_fixed()
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        assert summaries.write_palette_histogram(fixed, step=0) is False  # nothing fixed yet
        tfmot_wfn.run_fixing_stage(fixed, 0.6, 0.05)
        summaries.write_fixing_summaries(fixed, step=1)
        tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
        summaries.write_fixing_summaries(fixed, step=2)
        summaries.write_scalars({"loss": 0.5, "name": "x"}, step=2, prefix="train")
    writer.close()
    events = _events(str(tmp_path))
    hist = events[summaries.PALETTE_TAG]
    assert [(s, p) for s, p, _ in hist] == [(1, "histograms"), (2, "histograms")]
    for (_, _, buckets), fraction in zip(hist, (0.6, 1.0)):
        assert buckets.dtype == np.float64 and buckets.ndim == 2 and buckets.shape[1] == 3
        assert np.all(buckets[:, 0] < buckets[:, 1]) and np.all(buckets[1:, 0] == buckets[:-1, 1])
        total = sum(m.size for w in wrappers_of(fixed) for m in w.mask_numpy())
        assert buckets[:, 2].sum() == pytest.approx(fraction * total, abs=2)
    values, counts = summaries.palette_usage(fixed)
    np.testing.assert_array_equal(hist[-1][2][:, 2], counts)
    assert np.all((hist[-1][2][:, 0] < values) & (values < hist[-1][2][:, 1]))
    names = [w.layer.name for w in wrappers_of(fixed)]
    for name in names:
        points = events[f"{summaries.LAYER_FRACTION_PREFIX}/{name}"]
        assert [p for _, p, _ in points] == ["scalars", "scalars"]
        assert float(points[-1][2]) == 1.0
    assert float(events["train/loss"][0][2]) == 0.5 and "train/name" not in events
    assert summaries.layer_fixed_fractions(fixed) == {name: 1.0 for name in names}


def test_distance_auto_searches_then_runs_at_the_chosen_delta(digits_run, tmp_path):
    out = str(tmp_path / "auto")
    assert cli.main(["fix", digits_run["model"], "--data-dir", digits_run["data"], "--output", out,
                     "--distance", "auto", "--tolerance", "0.02", "--search-by-batches"] + RUN_FLAGS) == 0
    search = json.loads(open(os.path.join(out, "distance_search.json")).read())
    report = json.loads(open(os.path.join(out, "report.json")).read())
    assert report["settings"]["distance"] == search["distance"]
    assert report["settings"]["search_by_batches"] is True and search["count_seconds"] is False
    assert search["train_steps"] <= search["budget_steps"]
    assert {r["source"] for r in search["frontier"]} >= {"full"}
    # The search follows the job's schedule (--fractions) and has the default budget of 3 runs.
    full = [r["train_steps"] for r in search["frontier"] if r["source"] == "full"]
    assert set(full) == {search["budget_steps"] // 3}
    stage = wrappers_of(_load(os.path.join(out, "checkpoints", "stage_01.keras")))[0].fixing_schedule
    assert search["budget_steps"] // 3 == len(FRACTIONS.split(",")) * stage.steps_per_stage
    assert os.path.getsize(os.path.join(out, "distance_search.png")) > 1000
    # "The same command with --resume" works with --distance auto (a finished run: its report).
    assert cli.main(["fix", digits_run["model"], "--output", out, "--distance", "auto",
                     "--rule", "auto", "--resume"] + RUN_FLAGS) == 0
    # --overwrite with a fixed delta removes the old search's files with the old run.
    assert cli.main(["fix", digits_run["model"], "--data-dir", digits_run["data"], "--output", out,
                     "--distance", "0.05", "--overwrite"] + RUN_FLAGS) == 0
    assert not os.path.exists(os.path.join(out, "distance_search.json"))
    assert not os.path.exists(os.path.join(out, "distance_search.png"))


def test_resume_takes_a_new_learning_rate(digits_run, tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if interrupt[0] and batch == 1:
                raise KeyboardInterrupt

    class LearningRate(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(float(np.asarray(self.model.optimizer.learning_rate)))

    interrupt, seen, out = [False], [], str(tmp_path / "lr")
    config = fix_job.FixJobConfig(
        model_path=digits_run["model"], data_dir=digits_run["data"], output=out,
        fractions=tuple(float(f) for f in FRACTIONS.split(",")), batch_size=32,
        learning_rate=1e-3, augment=False, verbose=0)

    class Second(keras.callbacks.Callback):  # interrupt the second stage's fit
        def on_train_begin(self, logs=None):
            interrupt[0] = fix_job.read_state(out)["completed_stages"] >= 1

    with pytest.raises(KeyboardInterrupt):
        fix_job.run_fix_job(config, callbacks=[Second(), Interrupt()])
    report = fix_job.resume_fix_job(out, callbacks=[LearningRate()],
                                    overrides={"learning_rate": 0.02})
    assert seen and all(lr == pytest.approx(0.02) for lr in seen)
    assert report["settings"]["learning_rate"] == 0.02


def test_distance_auto_and_bad_tolerance_are_parsed_clearly(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fix", "m.keras", "--data-dir", "d", "--distance", "far"])
    assert "expected a number" in capsys.readouterr().err
    with pytest.raises(fix_job.FixJobError, match="tolerance must be in"):
        fix_job.FixJobConfig(model_path="m.keras", output="o", data_dir="d", tolerance=1.5)


def test_a_float_model_near_chance_on_the_data_gets_a_normalize_warning(digits_run, tmp_path):
    from tfmot_wfn.apps.demo import build_cnn

    keras.utils.set_random_seed(1)
    untrained = build_cnn(keras)
    classifier = untrained.layers[-1]  # always predicts class 0: about 1/10 right
    kernel, bias = classifier.get_weights()
    classifier.set_weights([np.zeros_like(kernel), np.eye(len(bias))[0].astype(bias.dtype)])
    path = str(tmp_path / "untrained.keras")
    untrained.save(path)
    flags = ["--data-dir", digits_run["data"], "--fractions", "1", "--steps-per-epoch", "1",
             "--quiet", "--no-augment"]
    with pytest.warns(UserWarning, match=r"near chance \(0\.1000 for 10 classes\).*--normalize"):
        cli.main(["fix", path, "--output", str(tmp_path / "chance")] + flags)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.main(["fix", digits_run["model"], "--output", str(tmp_path / "trained")] + flags)
    assert not [w for w in caught if "near chance" in str(w.message)]


def test_rule_and_int8_exact_flags_reach_the_job_settings(digits_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["fix", "m.keras", "--data-dir", "d", "--rule", "greedy"])
    assert "invalid choice: 'greedy'" in capsys.readouterr().err
    out = str(tmp_path / "paper_rule")
    assert cli.main(["fix", digits_run["model"], "--data-dir", digits_run["data"], "--output", out,
                     "--rule", "paper", "--int8-exact", "--fractions", "1", "--steps-per-epoch", "1",
                     "--quiet", "--no-augment"]) == 0
    report = json.loads(open(os.path.join(out, "report.json")).read())
    assert report["settings"]["rule"] == report["rule"] == "paper"
    assert report["settings"]["int8_exact"] is report["int8_exact"] is True


def test_each_stage_seeds_the_random_layers_from_the_stage_alone():
    # A resumed run's Dropout must draw what the uninterrupted run drew in that stage:
    # the generator state (not in the checkpoints) is set from (seed, stage) at its start.
    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5)])

    x = np.ones((2, 64), np.float32)
    advanced, fresh = model(), model()
    for _ in range(3):
        advanced(x, training=True)  # an uninterrupted run has drawn before this stage
    fix_job._seed_random_layers(advanced, 7)
    fix_job._seed_random_layers(fresh, 7)
    a, b = np.asarray(advanced(x, training=True)), np.asarray(fresh(x, training=True))
    assert 0 < np.count_nonzero(a) < a.size
    np.testing.assert_array_equal(a, b)
