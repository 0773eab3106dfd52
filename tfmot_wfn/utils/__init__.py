"""Small helpers every layer of tfmot_wfn may use (pure Python and numpy; no TensorFlow)."""
