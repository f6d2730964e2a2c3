"""The training stages: the run directory, device and sessions, the trainer, DDP and per-language evaluation."""
