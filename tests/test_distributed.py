"""tf.distribute: MirroredStrategy over two logical CPUs, MultiWorkerMirroredStrategy over
two worker processes on 127.0.0.1. Each runs in subprocesses started here, so that
the logical device configuration and TF_CONFIG never touch this test process.

Checked: the fixing stage runs once per stage (eagerly, in the Python process of each
worker, outside the replica functions), every replica and every worker ends with identical masks,
fixed values and palette, and the two-replica run matches the single-device run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRACTIONS = (0.3, 0.6, 0.8, 0.9, 1.0)

# Each starts two TensorFlow worker processes on free ports: one xdist worker runs both
# (pytest.ini: --dist loadgroup), so that they never compete for the cores and ports.
MULTI_WORKER = pytest.mark.xdist_group("multi_worker")

COMMON = r'''
import hashlib, os, sys
import numpy as np
import tensorflow as tf
{device_setup}
import keras
import tfmot_wfn
from tfmot_wfn.keras.network import FixingNetwork, wrappers_of

FRACTIONS = {fractions!r}
calls = []  # per call of the fixing stage: (eager and outside replicas?, hash in, hash out)
_stage = FixingNetwork.run_fixing_stage


def _digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def counting_stage(network, fraction, distance):
    wrappers = network.wrappers
    before = _digest([a for w in wrappers for a in w.effective_numpy()])
    summary = _stage(network, fraction, distance)
    after = _digest([a for w in wrappers for a in w.effective_numpy() + w.mask_numpy()]
                    + [w.palette.numpy() for w in wrappers])
    in_replica_fn = tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()
    calls.append((tf.executing_eagerly() and not in_replica_fn, before, after))
    return summary


FixingNetwork.run_fixing_stage = counting_stage  # every network-wide stage, counted

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)


def float_model(synchronized_bn, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8,))
    h = keras.layers.Dense(16)(inp)
    h = keras.layers.BatchNormalization(synchronized=synchronized_bn)(h)
    h = keras.layers.ReLU()(h)
    return keras.Model(inp, keras.layers.Dense(3)(h))


def wrap(model):
    """fix_weights + compile; call inside strategy.scope()."""
    fixed = tfmot_wfn.fix_weights(
        model, fixing_schedule=tfmot_wfn.StagedFixing(FRACTIONS, steps_per_stage=4))
    fixed.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return fixed


def build(synchronized_bn):
    return wrap(float_model(synchronized_bn))


def state(fixed, prefix, arrays):
    for i, w in enumerate(wrappers_of(fixed)):
        for j, (m, e, f) in enumerate(zip(w.mask_numpy(), w.effective_numpy(), w.fixed_values)):
            arrays[f"{{prefix}}mask_{{i}}_{{j}}"] = m
            arrays[f"{{prefix}}effective_{{i}}_{{j}}"] = e
            arrays[f"{{prefix}}fixed_{{i}}_{{j}}"] = f.numpy()
        arrays[f"{{prefix}}palette_{{i}}"] = w.palette.numpy()[: int(w.palette_size.numpy())]
        arrays[f"{{prefix}}fixing_step_{{i}}"] = w.fixing_step.numpy()


def record_calls(prefix, arrays):
    arrays[prefix + "calls"] = np.array(len(calls))
    arrays[prefix + "calls_eager_outside_replicas"] = np.array(all(c[0] for c in calls))
    arrays[prefix + "hash_in"] = np.array([c[1] for c in calls])
    arrays[prefix + "hash_out"] = np.array([c[2] for c in calls])
    del calls[:]
'''

MIRRORED = COMMON.format(fractions=FRACTIONS, device_setup=r'''
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
''') + r'''
out = sys.argv[1]
arrays = {}
# 4 steps per epoch of 64; 5 epochs = 20 steps; stages at steps 0, 4, 8, 12, 16.
fit_args = dict(batch_size=64, epochs=5, shuffle=False, verbose=0)

single = build(synchronized_bn=True)
loss = single.fit(x, y, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)], **fit_args)
arrays["single_loss"] = np.array(loss.history["loss"])
record_calls("single_", arrays)
state(single, "single_", arrays)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
arrays["replicas"] = np.array(strategy.num_replicas_in_sync)
with strategy.scope():
    mirrored = build(synchronized_bn=True)
arrays["variable_kind"] = np.array(type(wrappers_of(mirrored)[0].masks[0].value).__name__)
with strategy.scope():
    unattended = build(synchronized_bn=True)
try:  # no UpdateFixingStep: the wrappers' Assert fails in the replicas
    unattended.fit(x, y, batch_size=64, epochs=1, verbose=0)
    arrays["missing_callback_error"] = np.array("")
except tf.errors.InvalidArgumentError as e:
    arrays["missing_callback_error"] = np.array(str(e))
loss = mirrored.fit(x, y, callbacks=[tfmot_wfn.UpdateFixingStep(verbose=0)], **fit_args)
arrays["mirrored_loss"] = np.array(loss.history["loss"])
record_calls("mirrored_", arrays)
state(mirrored, "mirrored_", arrays)

# Every replica's component of every fixing variable and of the fixed weights.
unequal = []
for w in wrappers_of(mirrored):
    for v in (list(w.masks) + list(w.fixed_values) + list(w.fixable_variables)
              + [w.palette, w.palette_size, w.fixing_step]):
        components = [np.asarray(c.numpy()) for c in v.value.values]
        if len(components) != 2 or not all(np.array_equal(components[0], c) for c in components):
            unequal.append(v.path)
arrays["unequal_replica_variables"] = np.array(unequal, dtype=str)
np.savez(out, **arrays)
'''

WORKER = COMMON.format(fractions=FRACTIONS, device_setup="") + r'''
out, seed = sys.argv[1], int(sys.argv[2])
strategy = tf.distribute.MultiWorkerMirroredStrategy()

# Keras 3.15's fit() calls strategy.reduce on a tuple (x, y) and with axis=0 on
# scalars, which MultiWorkerMirroredStrategy does not accept (keras-team/keras#20585;
# it fails the same without tfmot_wfn). Reduce each element, scalars over replicas.
_reduce = strategy.reduce


def _reduce_nested(reduce_op, value, axis=None):
    def one(v):
        rank = v.values[0].shape.rank if hasattr(v, "values") else getattr(v.shape, "rank", None)
        return _reduce(reduce_op, v, axis=None if rank == 0 else axis)
    return tf.nest.map_structure(one, value)


strategy.reduce = _reduce_nested

# The float model is built (or loaded) outside the scope, as a trained model would be;
# every worker must build it identically (here: the same seed).
model = float_model(synchronized_bn=False, seed=seed)
with strategy.scope():
    fixed = wrap(model)
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)  # sharded across the workers
update = tfmot_wfn.UpdateFixingStep(verbose=0)
try:
    fixed.fit(dataset, epochs=5, verbose=0, callbacks=[update])
except RuntimeError as e:
    np.savez(out, error=np.array(str(e)))
    raise SystemExit(3)
arrays = {"replicas": np.array(strategy.num_replicas_in_sync),
          "history": np.array([s.fraction for s in update.history])}
record_calls("", arrays)
state(fixed, "", arrays)
np.savez(out, **arrays)
'''


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wrapper_keys(arrays, prefix=""):
    return sorted(k[len(prefix):] for k in arrays if k.startswith(prefix) and any(
        k[len(prefix):].startswith(p) for p in ("mask_", "effective_", "fixed_", "palette_",
                                                "fixing_step_")))


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script, out = tmp_path / "mirrored.py", tmp_path / "mirrored.npz"
    script.write_text(MIRRORED)
    proc = subprocess.run([sys.executable, str(script), str(out)], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")[-4000:]
    a = dict(np.load(out))
    assert int(a["replicas"]) == 2
    assert str(a["variable_kind"]) == "MirroredVariable"
    assert "without the tfmot_wfn.UpdateFixingStep() callback" in str(a["missing_callback_error"])
    # The stage runs once per stage, eagerly in the Python process (not once per replica).
    assert int(a["mirrored_calls"]) == int(a["single_calls"]) == len(FRACTIONS)
    assert bool(a["mirrored_calls_eager_outside_replicas"])
    # Both replicas hold the same masks, fixed values, palette, step and weights.
    assert a["unequal_replica_variables"].size == 0, a["unequal_replica_variables"]
    # Everything fixed, one shared palette.
    keys = _wrapper_keys(a, "mirrored_")
    assert all(a["mirrored_" + k].all() for k in keys if k.startswith("mask_"))
    palettes = [a["mirrored_" + k] for k in keys if k.startswith("palette_")]
    assert all(np.array_equal(palettes[0], p) for p in palettes)
    # Matches the single-device run: the first stage sees identical weights (same
    # masks and palette); afterwards gradients are all-reduced sums of two half
    # batches, equal up to float rounding (with synchronized BatchNormalization).
    assert a["single_hash_out"][0] == a["mirrored_hash_out"][0]
    np.testing.assert_allclose(a["mirrored_loss"], a["single_loss"], rtol=1e-4)
    fixed_values = [(a["single_" + k], a["mirrored_" + k]) for k in keys
                    if k.startswith("effective_")]
    same = np.mean(np.concatenate([(s == m).ravel() for s, m in fixed_values]))
    assert same >= 0.99, same
    shared = np.intersect1d(a["single_palette_0"], a["mirrored_palette_0"]).size
    assert shared >= 0.9 * max(a["single_palette_0"].size, a["mirrored_palette_0"].size)


def _run_workers(tmp_path, seeds):
    """Start one worker process per seed on 127.0.0.1 (free ports); return (codes, outputs)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(len(seeds))]
    procs = []
    try:
        for index, seed in enumerate(seeds):
            tf_config = json.dumps({"cluster": {"worker": workers},
                                    "task": {"type": "worker", "index": index}})
            procs.append(subprocess.Popen(
                [sys.executable, str(script), str(tmp_path / f"worker{index}.npz"), str(seed)],
                env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        outputs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], outputs


@pytest.mark.slow
@MULTI_WORKER
def test_multi_worker_mirrored_strategy_two_workers_end_identical(tmp_path):
    codes, outputs = _run_workers(tmp_path, seeds=(0, 0))
    for code, output in zip(codes, outputs):
        assert code == 0, output[-4000:]
    chief, other = (dict(np.load(tmp_path / f"worker{i}.npz")) for i in range(2))
    for a in (chief, other):
        assert int(a["replicas"]) == 2
        assert int(a["calls"]) == len(FRACTIONS)  # once per stage in each worker
        assert bool(a["calls_eager_outside_replicas"])
        assert [round(f, 4) for f in a["history"]] == list(FRACTIONS)
        keys = _wrapper_keys(a)
        assert all(a[k].all() for k in keys if k.startswith("mask_"))
    # Each worker ran every stage on identical weights and so computed identical results.
    assert list(chief["hash_in"]) == list(other["hash_in"])
    assert list(chief["hash_out"]) == list(other["hash_out"])
    keys = _wrapper_keys(chief)
    assert keys == _wrapper_keys(other) and keys
    for k in keys:
        assert np.array_equal(chief[k], other[k]), k
    assert chief["palette_0"].size > 1


@pytest.mark.slow
@MULTI_WORKER
def test_multi_worker_with_different_weights_on_each_worker_is_refused(tmp_path):
    """Workers whose float models differ (built outside the scope with different seeds)
    would fix to different palettes: UpdateFixingStep compares a digest of every
    worker's state at the first batch and both workers refuse."""
    codes, outputs = _run_workers(tmp_path, seeds=(0, 1))
    for index, (code, output) in enumerate(zip(codes, outputs)):
        assert code == 3, output[-4000:]
        error = str(np.load(tmp_path / f"worker{index}.npz")["error"])
        assert "workers hold different weights or fixing states at the start of training" in error
        assert "same seed" in error
