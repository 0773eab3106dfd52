"""Progress bars for long steps (tqdm), as Keras callbacks."""

from __future__ import annotations

from tqdm.auto import tqdm

from tfmot_wfn.keras.compat import keras


class EpochProgress(keras.callbacks.Callback):
    """One tqdm bar over the epochs of `fit`, showing loss and accuracy.

    Args:
      total: number of epochs.
      desc: label of the bar.
      enabled: False silences it (``--quiet`` / ``verbose=0``).
    """

    def __init__(self, total: int, desc: str = "training", enabled: bool = True):
        super().__init__()
        self.total, self.desc, self.enabled = int(total), desc, bool(enabled)
        self.bar = None

    def on_train_begin(self, logs=None):
        self.bar = tqdm(total=self.total, desc=self.desc, unit="epoch",
                        disable=not self.enabled, dynamic_ncols=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = {k: f"{logs[k]:.4f}" for k in ("loss", "accuracy") if k in logs}
        self.bar.set_postfix(shown)
        self.bar.update(1)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
