"""tfmot_wfn: Weight Fixing Networks for Keras, in the style of the TF Model Optimization Toolkit.

```python
import tfmot_wfn
fixed = tfmot_wfn.fix_weights(model)                     # wraps, never mutates `model`
fixed.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
fixed.fit(x, y, epochs=10, callbacks=[tfmot_wfn.UpdateFixingStep()])
final = tfmot_wfn.strip_fixing(fixed)                    # plain model, palette weights
print(tfmot_wfn.report(final))
```
"""

from tfmot_wfn.utils.version import __version__  # noqa: E402,F401

import importlib as _importlib

from tfmot_wfn import _moved_modules

_moved_modules.install()  # old module paths import for one release, with a warning

# Public names and the module that defines each. They are imported on first use
# (PEP 562), so `import tfmot_wfn.core` or `tfmot-wfn --help` do not pay for
# importing TensorFlow, and tfmot_wfn.keras.compat picks the Keras module once.
_EXPORTS = {
    "ZERO_DISTANCE": "tfmot_wfn.core.powers_of_two",
    "EnergyTable": "tfmot_wfn.core.energy_table",
    "HardwareCost": "tfmot_wfn.core.hardware_cost",
    "hardware_cost": "tfmot_wfn.keras.hardware_cost",
    "IS_LEGACY_KERAS": "tfmot_wfn.keras.compat",
    "freeze_batchnorm": "tfmot_wfn.keras.batchnorm_freezing",
    "fix_weights": "tfmot_wfn.keras.fix",
    "fixing_scope": "tfmot_wfn.keras.fix",
    "strip_fixing": "tfmot_wfn.keras.fix",
    "FixableLayer": "tfmot_wfn.keras.fixable_layer",
    "FixingSummaries": "tfmot_wfn.keras.fixing_callbacks",
    "UpdateFixingStep": "tfmot_wfn.keras.fixing_callbacks",
    "PAPER_FRACTIONS": "tfmot_wfn.keras.fixing_schedule",
    "FixingSchedule": "tfmot_wfn.keras.fixing_schedule",
    "PolynomialFixing": "tfmot_wfn.keras.fixing_schedule",
    "StagedFixing": "tfmot_wfn.keras.fixing_schedule",
    "DEFAULT_DISTANCE": "tfmot_wfn.keras.fixing_config",
    "FixingConfig": "tfmot_wfn.keras.fixing_config",
    "WeightFixingWrapper": "tfmot_wfn.keras.fixing_wrapper",
    "FixingReport": "tfmot_wfn.keras.report",
    "fixed_fraction": "tfmot_wfn.keras.report",
    "palette": "tfmot_wfn.keras.report",
    "report": "tfmot_wfn.keras.report",
    "unique_weights": "tfmot_wfn.keras.report",
    "weight_entropy": "tfmot_wfn.keras.report",
    "FixingNetwork": "tfmot_wfn.keras.network",
    "run_fixing_stage": "tfmot_wfn.keras.network",
    "regularization_value": "tfmot_wfn.keras.regularizer",
    "regularized_loss": "tfmot_wfn.keras.regularizer",
    "DistanceSearch": "tfmot_wfn.apps.distance_search",
    "search_distance": "tfmot_wfn.apps.distance_search",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tfmot_wfn' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "DEFAULT_DISTANCE",
    "DistanceSearch",
    "IS_LEGACY_KERAS",
    "PAPER_FRACTIONS",
    "ZERO_DISTANCE",
    "EnergyTable",
    "FixableLayer",
    "FixingConfig",
    "FixingNetwork",
    "FixingReport",
    "FixingSchedule",
    "FixingSummaries",
    "HardwareCost",
    "PolynomialFixing",
    "StagedFixing",
    "UpdateFixingStep",
    "WeightFixingWrapper",
    "fix_weights",
    "fixed_fraction",
    "fixing_scope",
    "freeze_batchnorm",
    "hardware_cost",
    "palette",
    "regularization_value",
    "regularized_loss",
    "report",
    "run_fixing_stage",
    "search_distance",
    "strip_fixing",
    "unique_weights",
    "weight_entropy",
]
