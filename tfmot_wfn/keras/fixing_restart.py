"""`FixingRestart`: run the fixing schedule again on the same wrapped model, from its start.

A model made by `fix_weights` traces its training step at its first `fit`; on a deep
network that takes longer than the ten fixing stages together. Whoever compares settings
on one network (`tfmot_wfn.search_distance` runs it at several distances) can keep the
traced step: `FixingRestart` remembers every variable of the wrapped model before its first
`fit` (weights, BatchNorm statistics, fixed masks and values, palette, schedule step, Keras 3
random-seed states) and the optimizer's learning rate; `restart` puts all of them back,
gives the optimizer the state of a fresh copy (moments 0, ``iterations`` 0) and sets the new
run's ``distance`` / ``fixing_schedule`` on every wrapper and on the network the traced step
reads (which keeps its regulariser table: `UpdateFixingStep` refreshes it in place). The next `fit` then
starts where a new ``fix_weights(model, ...)`` with those settings would, without tracing
again. Under tf_keras, random ops such as Dropout without a seed keep their own op state,
which a restart does not rewind: a restarted run draws other dropout masks than a new model.

```python
fixed = tfmot_wfn.fix_weights(model, distance=0.015)
fixed.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
restart = FixingRestart(fixed)                 # before the first fit
fixed.fit(x, y, epochs=10, callbacks=[tfmot_wfn.UpdateFixingStep()])
first = tfmot_wfn.strip_fixing(fixed)
restart.restart(distance=0.03)                 # the float weights again, delta 0.03
fixed.fit(x, y, epochs=10, callbacks=[tfmot_wfn.UpdateFixingStep()])
```
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

import numpy as np

from tfmot_wfn.keras.compat import optimizer_built
from tfmot_wfn.keras.fixing_callbacks import has_schedule, reset_optimizer
from tfmot_wfn.keras.network import FixingNetwork, forget_network

#: The settings a restart may change: those the traced training step does not read.
RESTART_SETTINGS = ("distance", "fixing_schedule")


class FixingRestart:
    """Remembers a wrapped model's state before training; `restart` returns to it.

    Args:
      model: a model made by `fix_weights` (or holding `WeightFixingWrapper`s), not yet
        trained with `UpdateFixingStep` (its schedule step is still -1).

    Raises:
      ValueError: no wrapper, or the model was already trained by the schedule.
    """

    def __init__(self, model):
        network = FixingNetwork.of(model)  # ValueError without wrappers
        if network.stored_step() >= 0:
            raise ValueError(
                f"FixingRestart needs the model before its first fixing fit, but model "
                f"{model.name!r} is at schedule step {network.stored_step()}: create the "
                "FixingRestart right after fix_weights (and compile).")
        self.model = model
        # The network the training step will trace (the model's cached one): kept alive and
        # updated in place, since the traced step reads its regulariser table's variables.
        self._network = network
        self._variables = list(model.variables)
        self._initial: List[np.ndarray] = [np.array(v.numpy(), copy=True) for v in self._variables]
        optimizer = getattr(model, "optimizer", None)
        self._learning_rate = (float(np.asarray(optimizer.learning_rate))
                               if optimizer is not None and not has_schedule(optimizer) else None)

    def restart(self, **settings: Any) -> None:
        """Every variable back to its remembered value, a fresh optimizer state, and
        ``settings`` (a subset of `RESTART_SETTINGS`) on every wrapper.

        Raises:
          TypeError: a setting outside `RESTART_SETTINGS` (the others change what the
            traced step computes: make a new model with `fix_weights` for them).
          ValueError: an invalid value (`FixingConfig` checks it); nothing is changed then.
        """
        unknown = sorted(set(settings) - set(RESTART_SETTINGS))
        if unknown:
            raise TypeError(f"FixingRestart.restart takes {', '.join(RESTART_SETTINGS)}, got "
                            f"{', '.join(unknown)}: call fix_weights for other settings")
        if len(list(self.model.variables)) != len(self._variables):
            raise RuntimeError(
                f"model {self.model.name!r} gained or lost variables since the FixingRestart "
                "was made: make it again right after fix_weights")
        wrappers = self._network.wrappers
        configs = [dataclasses.replace(w.fixing_config, **settings) for w in wrappers]  # checks
        if "fixing_schedule" in settings:  # one copy for the wrappers, as fix_weights makes
            schedule = configs[0].fixing_schedule.copy()
            configs = [dataclasses.replace(c, fixing_schedule=schedule) for c in configs]
        for variable, value in zip(self._variables, self._initial):
            variable.assign(value)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and optimizer_built(optimizer):
            reset_optimizer(optimizer, self.model.trainable_variables)
            optimizer.iterations.assign(0)  # a new run: a learning-rate schedule starts over
        if optimizer is not None and self._learning_rate is not None:
            optimizer.learning_rate.assign(self._learning_rate)  # e.g. after ReduceLROnPlateau
        for wrapper, config in zip(wrappers, configs):
            wrapper.fixing_config = config
            forget_network(wrapper)  # a lone wrapper's cached network holds the old settings
        self._network.reload_settings()

    def settings(self) -> Dict[str, Any]:
        """The current values of `RESTART_SETTINGS` (shared by every wrapper)."""
        return {name: getattr(self._network, name) for name in RESTART_SETTINGS}


__all__ = ["FixingRestart", "RESTART_SETTINGS"]
