"""Keras glue of tfmot_wfn (wrapper, schedules, callbacks, entry points, metrics)."""
