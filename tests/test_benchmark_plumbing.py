"""The benchmark scripts' bookkeeping: what run.py holds out for search_distance, and what
frontier.py keeps of a results file measured under the other ``--optimizer``."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from tfmot_wfn.keras.compat import IS_LEGACY_KERAS

if IS_LEGACY_KERAS:
    # run.py refuses to import under legacy Keras (it measures Keras 3; tfmot runs in a subprocess).
    pytest.skip("the benchmark scripts run under Keras 3", allow_module_level=True)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import frontier  # noqa: E402
import run  # noqa: E402


def test_held_out_images_are_the_last_fifth_of_the_training_split_and_nothing_else():
    x_train, y_train = np.arange(100).reshape(100, 1), np.arange(100) % 10
    x_test, y_test = np.arange(7).reshape(7, 1), np.arange(7)
    (xt, xs, yt, ys), (xv, yv) = run.held_out((x_train, x_test, y_train, y_test))
    assert len(xt) == 80 and len(xv) == 20
    assert set(xt[:, 0]).isdisjoint(xv[:, 0])  # no model trains on a validation image
    np.testing.assert_array_equal(np.concatenate([xt, xv]), x_train)
    np.testing.assert_array_equal(np.concatenate([yt, yv]), y_train)
    assert xs is x_test and ys is y_test  # the test split is untouched


def test_switching_the_optimizer_drops_only_the_wfn_rows():
    results = {"_optimizer": "carried",
               "cnn": {"seeds": {"0": {"float": {}, "int8 PTQ": {}, "tfmot-16": {},
                                       "WFN paper delta=0.015": {}, "WFN third delta=0.03": {}}}}}
    frontier.keep_only_peer_rows(results)
    assert sorted(results["cnn"]["seeds"]["0"]) == ["float", "int8 PTQ", "tfmot-16"]
    assert results["_optimizer"] == "carried"  # main() records the new choice itself


def test_a_results_file_from_before_the_option_reads_as_carried(tmp_path):
    assert frontier.OPTIMIZER_BEFORE == "carried" and frontier.OPTIMIZERS["fresh"] == {"fresh_optimizer": True}
    text = frontier.write_report({}, str(tmp_path / "f.md"), None)
    assert "fresh_optimizer=False" in text and "--optimizer carried" in text
    text = frontier.write_report({"_optimizer": "fresh"}, str(tmp_path / "f.md"), None)
    assert "fresh optimizer at every stage" in text and "--optimizer" not in text
