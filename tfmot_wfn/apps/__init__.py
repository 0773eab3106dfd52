"""Applications built on the library: the command line, the resumable fix job, data
pipelines, the demo, plots and the export/runtime checks. Nothing below imports these."""
