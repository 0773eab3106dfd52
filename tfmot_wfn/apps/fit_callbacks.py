"""The fix job's Keras callbacks: a progress bar over batches, train/eval TensorBoard scalars.

```python
progress = BatchProgress("stage 2/10: training", enabled=True,
                         first_desc="stage 2/10: fixing 0.6 of the weights", epochs=2)
model.fit(train, epochs=2, callbacks=[progress, TrainingSummaries(writer)])
write_scalars_to(writer, model.evaluate(test, return_dict=True), step=1, prefix="eval")
```
"""

from __future__ import annotations

from typing import Dict, Optional

from tfmot_wfn.keras import summaries
from tfmot_wfn.keras.compat import keras


class BatchProgress(keras.callbacks.Callback):
    """A tqdm bar over the batches of one `fit` (all its epochs) or one `evaluate`.

    Args:
      desc: the bar's label.
      enabled: False silences it (``--quiet``).
      first_desc: the label until the first batch ends (the fixing stage runs there).
      epochs: epochs this fit runs (default: ``params["epochs"]``).
    """

    def __init__(self, desc: str, enabled: bool, first_desc: Optional[str] = None,
                 epochs: Optional[int] = None):
        super().__init__()
        self.desc, self.first_desc, self.enabled = desc, first_desc, bool(enabled)
        self.epochs = epochs
        self.bar = None

    def _open(self, total):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=self.first_desc or self.desc, unit="batch",
                        disable=not self.enabled, dynamic_ncols=True, leave=False)

    def on_train_begin(self, logs=None):
        steps = (self.params or {}).get("steps")
        epochs = self.epochs or (self.params or {}).get("epochs") or 1
        self._open(steps * epochs if steps else None)

    def on_train_batch_end(self, batch, logs=None):
        if self.first_desc:  # the fixing stage ran at the first batch
            self.bar.set_description(self.desc)
            self.first_desc = None
        logs = logs or {}
        self.bar.set_postfix({k: f"{logs[k]:.4f}" for k in ("loss", "accuracy") if k in logs},
                             refresh=False)
        self.bar.update(1)

    def on_test_begin(self, logs=None):
        if self.bar is None:
            self._open((self.params or {}).get("steps") or None)

    def on_test_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, logs=None):
        self._close()

    def on_test_end(self, logs=None):
        self._close()


def write_scalars_to(writer, values: Dict[str, float], step: int, prefix: str) -> None:
    """`tfmot_wfn.keras.summaries.write_scalars` into `writer`, flushed."""
    with writer.as_default():
        summaries.write_scalars(values, step=step, prefix=prefix)
    writer.flush()


class TrainingSummaries(keras.callbacks.Callback):
    """TensorBoard: train/* epoch metrics (FixingSummaries writes the fixing/* summaries).

    Args:
      writer: a ``tf.summary`` file writer, open while the fits run (the job's).
    """

    def __init__(self, writer):
        super().__init__()
        self.writer = writer

    def on_epoch_end(self, epoch, logs=None):
        write_scalars_to(self.writer, logs or {}, step=epoch, prefix="train")
