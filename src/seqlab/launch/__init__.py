"""The launch layer: run and sweep dirs, SLURM, tuning, and the process settings (threads, OpenMP, malloc) made
before torch loads. No module here imports torch at import time (tests/test_layers.py): Hydra runs these callbacks
in the launching process."""
