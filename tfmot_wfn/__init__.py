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

__version__ = "0.1.0"

from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE  # noqa: E402
from tfmot_wfn.keras.compat import IS_LEGACY_KERAS  # noqa: E402
from tfmot_wfn.keras.fix import fix_weights, fixing_scope, strip_fixing  # noqa: E402
from tfmot_wfn.keras.fixable_layer import FixableLayer  # noqa: E402
from tfmot_wfn.keras.fixing_callbacks import FixingSummaries, UpdateFixingStep  # noqa: E402
from tfmot_wfn.keras.fixing_schedule import (  # noqa: E402
    PAPER_FRACTIONS,
    FixingSchedule,
    PolynomialFixing,
    StagedFixing,
)
from tfmot_wfn.keras.fixing_wrapper import DEFAULT_DISTANCE, WeightFixingWrapper  # noqa: E402
from tfmot_wfn.keras.metrics import (  # noqa: E402
    FixingReport,
    fixed_fraction,
    palette,
    report,
    unique_weights,
    weight_entropy,
)
from tfmot_wfn.keras.network_fixing import run_fixing_stage  # noqa: E402
from tfmot_wfn.keras.regularizer import regularization_value, regularized_loss  # noqa: E402

__all__ = [
    "DEFAULT_DISTANCE",
    "IS_LEGACY_KERAS",
    "PAPER_FRACTIONS",
    "ZERO_DISTANCE",
    "FixableLayer",
    "FixingReport",
    "FixingSchedule",
    "FixingSummaries",
    "PolynomialFixing",
    "StagedFixing",
    "UpdateFixingStep",
    "WeightFixingWrapper",
    "fix_weights",
    "fixed_fraction",
    "fixing_scope",
    "palette",
    "regularization_value",
    "regularized_loss",
    "report",
    "run_fixing_stage",
    "strip_fixing",
    "unique_weights",
    "weight_entropy",
]
