"""Training: losses, optimisers and schedules, one epoch (engine), one member's loop, and `fit(cfg)`."""
