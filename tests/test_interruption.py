"""A run killed with SIGKILL in the middle of the schedule resumes with BackupAndRestore.

The training runs in real subprocesses (the script below). The run under test is
killed in the middle of epoch 4, right after the fifth stage ran at the first
batch of that epoch and one more batch trained; the backup of epoch 3 holds the
first four stages. The same script is then started again and resumes. An
uninterrupted run of the same script with the same seed is the reference.

What is checked (docs/reliability.md says the same in words):

* the resumed process starts from exactly the state of the last backup: masks,
  fixed values, palette, palette size, fixing step, every weight and the
  optimizer's variables, bit for bit, and the schedule resolves the same
  steps_per_stage from fit;
* it redoes the interrupted stage (index 4, the same step) with the same masks,
  fixed values and palette as the killed process had computed;
* values fixed before the interruption are bit-identical at the end;
* the finished run equals the uninterrupted one bit for bit (same fixed fraction,
  palette, masks and weights): data order (shuffle=False) and op determinism
  make the batches and arithmetic after the resume the same as without it.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import keras
import keras_helpers as kh
import tfmot_wfn
from tfmot_wfn.keras.network import wrappers_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r'''
import os, sys, time
import numpy as np
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
import keras
import tfmot_wfn
from tfmot_wfn.keras.network import wrappers_of

backup_dir, out_dir, kill_epoch = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(out_dir, exist_ok=True)
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
                          keras.layers.BatchNormalization(), keras.layers.ReLU(),
                          keras.layers.Dense(3)])
schedule = tfmot_wfn.StagedFixing()  # the paper's ten stages; steps_per_stage from fit
fixed = tfmot_wfn.fix_weights(model, fixing_schedule=schedule)
schedule = wrappers_of(fixed)[0].fixing_schedule  # the wrappers' copy, which fit resolves
fixed.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def dump(name, update=None):
    arrays = {}
    for i, w in enumerate(wrappers_of(fixed)):
        for j, (m, f, e) in enumerate(zip(w.mask_numpy(), w.fixed_values, w.effective_numpy())):
            arrays[f"mask_{i}_{j}"] = m
            arrays[f"fixed_{i}_{j}"] = f.numpy()
            arrays[f"effective_{i}_{j}"] = e
        arrays[f"palette_{i}"] = w.palette.numpy()
        arrays[f"palette_size_{i}"] = w.palette_size.numpy()
        arrays[f"fixing_step_{i}"] = w.fixing_step.numpy()
    for k, v in enumerate(fixed.weights):
        arrays[f"weight_{k}"] = np.asarray(v.numpy())
    for k, v in enumerate(fixed.optimizer.variables):
        arrays[f"optimizer_{k}"] = np.asarray(v.numpy())
    arrays["steps_per_stage"] = np.array(-1 if schedule.steps_per_stage is None
                                         else schedule.steps_per_stage)
    if update is not None:
        arrays["history_steps"] = np.array([s.fraction for s in update.history])
    path = os.path.join(out_dir, name + ".npz")
    np.savez(path + ".tmp.npz", **arrays)
    os.replace(path + ".tmp.npz", path)


class Probe(keras.callbacks.Callback):
    """After BackupAndRestore in the list: sees the restored state and the saved backups."""

    def __init__(self, update):
        super().__init__()
        self.update, self.epoch = update, 0

    def on_train_begin(self, logs=None):
        dump(f"begin_{os.getpid()}")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:  # the stage of this epoch ran at its first batch
            dump(f"stage_epoch{self.epoch}_{os.getpid()}", self.update)
        if self.epoch == kill_epoch and batch == 1:
            with open(os.path.join(out_dir, "marker"), "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)  # the parent kills us here

    def on_epoch_end(self, epoch, logs=None):
        dump(f"epoch{epoch}_{os.getpid()}")


update = tfmot_wfn.UpdateFixingStep(verbose=0)
# UpdateFixingStep first, as users write it: its on_train_begin runs BEFORE
# BackupAndRestore restores the variables, so it must pick the step up later.
fixed.fit(x, y, batch_size=32, epochs=10, shuffle=False, verbose=0,
          callbacks=[update, keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch"),
                     Probe(update)])
dump("final", update)
'''

KILL_EPOCH = 4  # stages 0..3 are in the backup of epoch 3; stage 4 runs, then SIGKILL


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def _load(pattern):
    (path,) = glob.glob(pattern)
    return dict(np.load(path))


def _assert_same(a, b, keys=None, context=""):
    keys = sorted(set(a) - {"history_steps"}) if keys is None else keys
    assert set(keys) <= set(b), context
    for k in keys:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{context} {k}"
        assert np.array_equal(a[k], b[k]), f"{context}: {k} differs"


@pytest.mark.slow  # three TensorFlow processes: ~10 s alone, up to ~20 s on a busy machine
def test_sigkill_mid_schedule_resumes_with_backup_and_restore(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run, ref = tmp_path / "run", tmp_path / "ref"
    start = time.time()
    reference = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "backup_ref"), str(ref), "-1"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "backup"), str(run), str(KILL_EPOCH)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while not (run / "marker").exists():
            if victim.poll() is not None:
                pytest.fail("the child ended before the kill point:\n"
                            + victim.stdout.read().decode(errors="replace")[-3000:])
            assert time.time() - start < 120, "the child never reached the kill point"
            time.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    killed_pid = int((run / "marker").read_text())
    (run / "marker").unlink()
    assert not (run / f"epoch{KILL_EPOCH}_{killed_pid}.npz").exists()  # died mid-epoch

    resumed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "backup"), str(run), "-1"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert resumed.returncode == 0, resumed.stdout.decode(errors="replace")[-3000:]
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out.decode(errors="replace")[-3000:]

    (resumed_begin,) = [p for p in glob.glob(str(run / "begin_*.npz"))
                        if not p.endswith(f"_{killed_pid}.npz")]
    resumed_pid = int(resumed_begin.rsplit("_", 1)[1][:-4])

    # 1. The resumed process starts from the last backup (end of epoch 3), bit for bit:
    #    fixing state, every weight, the optimizer; the schedule resolves the same length.
    backup = _load(str(run / f"epoch{KILL_EPOCH - 1}_{killed_pid}.npz"))
    begin = _load(resumed_begin)
    _assert_same(backup, begin, context="backup vs resumed start")
    steps_per_epoch = 128 // 32
    assert int(begin["steps_per_stage"]) == steps_per_epoch
    assert int(begin["fixing_step_0"]) == KILL_EPOCH * steps_per_epoch
    assert any(k.startswith("optimizer_") for k in begin)

    # 2. Same stage: the resumed run's first stage is stage 4 at step 16, and it
    #    produces the masks, fixed values and palette the killed process computed.
    killed_stage = _load(str(run / f"stage_epoch{KILL_EPOCH}_{killed_pid}.npz"))
    resumed_stage = _load(str(run / f"stage_epoch{KILL_EPOCH}_{resumed_pid}.npz"))
    assert list(killed_stage["history_steps"]) == list(tfmot_wfn.PAPER_FRACTIONS[:KILL_EPOCH + 1])
    assert list(resumed_stage["history_steps"]) == [tfmot_wfn.PAPER_FRACTIONS[KILL_EPOCH]]
    _assert_same(killed_stage, resumed_stage, context="interrupted stage vs redone stage")

    # 3. Values fixed before the interruption never changed.
    final = _load(str(run / "final.npz"))
    for key in backup:
        if key.startswith("mask_"):
            suffix = key[len("mask_"):]
            mask = backup[key]
            assert final[key][mask].all()
            assert np.array_equal(final[f"effective_{suffix}"][mask],
                                  backup[f"effective_{suffix}"][mask])
            assert np.array_equal(final[f"fixed_{suffix}"][mask], backup[f"fixed_{suffix}"][mask])

    # 4. The finished run equals the uninterrupted one with the same seed.
    reference_final = _load(str(ref / "final.npz"))
    assert list(reference_final["history_steps"]) == list(tfmot_wfn.PAPER_FRACTIONS)
    assert list(final["history_steps"]) == list(tfmot_wfn.PAPER_FRACTIONS[KILL_EPOCH:])
    assert all(final[k].all() for k in final if k.startswith("mask_"))  # fixed fraction 1
    _assert_same(reference_final, final, context="resumed vs uninterrupted")
    assert int(final["palette_size_0"]) > 1


def test_checkpoint_resume_keeps_the_resolved_stage_length(tmp_path):
    """ModelCheckpoint-style resume: the resolved steps_per_stage is in the wrapper config.

    A run saved mid-schedule with StagedFixing(steps_per_stage=None) and resumed with
    another batch size keeps its stage length (it does not re-resolve from the new fit).
    """
    x, y = kh.classification_data(n=64)
    schedule = tfmot_wfn.StagedFixing(fractions=(0.5, 0.8, 1.0))
    fixed = kh.compile_classifier(
        tfmot_wfn.fix_weights(kh.dense_model(), fixing_schedule=schedule), from_logits=True)
    fixed.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)])
    assert wrappers_of(fixed)[0].fixing_schedule.steps_per_stage == 4
    assert schedule.steps_per_stage is None  # resolved in the wrappers' copy, not the caller's
    path = str(tmp_path / "checkpoint.keras")
    fixed.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    wrappers = wrappers_of(loaded)
    assert all(w.fixing_schedule.steps_per_stage == 4 for w in wrappers)
    kh.assert_states_equal(kh.network_state(loaded), kh.network_state(fixed))
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[update])  # 8 steps per epoch
    assert all(w.fixing_schedule.steps_per_stage == 4 for w in wrappers)
    assert [round(s.fraction, 3) for s in update.history] == [0.8, 1.0]  # steps 4 and 8
    assert tfmot_wfn.fixed_fraction(loaded) == 1.0


def test_backup_metadata_behind_the_weights_follows_the_weights(tmp_path):
    """Killed between BackupAndRestore's two writes: the weights file is a newer epoch than
    training_metadata.json. The schedule follows the fixing step saved WITH the weights,
    so no stage is skipped or repeated; Keras just trains one more epoch."""
    import json

    x, y = kh.classification_data(n=64)
    backup = str(tmp_path / "backup")

    def make():
        schedule = tfmot_wfn.StagedFixing(fractions=(0.5, 0.8, 0.9, 1.0))
        return kh.compile_classifier(
            tfmot_wfn.fix_weights(kh.dense_model(), fixing_schedule=schedule), from_logits=True)

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    first = make()
    cb = keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)
    first.fit(x, y, batch_size=16, epochs=4, verbose=0,
              callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0), cb, Stop()])
    state = kh.network_state(first)
    assert state[0]["fixing_step"] == 8
    # Pretend the metadata write of epoch 1 was lost: it still says "epoch 1 starts next".
    with open(os.path.join(backup, "training_metadata.json"), "w") as f:
        json.dump({"epoch": 1, "batch": 0}, f)

    second = make()
    update = tfmot_wfn.UpdateFixingStep(verbose=0)
    second.fit(x, y, batch_size=16, epochs=4, verbose=0,
               callbacks=[update, keras.callbacks.BackupAndRestore(backup)])
    # Stages 0 and 1 were done before; the resume runs stages 2 and 3 (steps 8 and 12) once.
    assert [round(s.fraction, 3) for s in update.history] == [0.9, 1.0]
    assert tfmot_wfn.fixed_fraction(second) == 1.0
