"""A run's lifecycle: its folder, saved settings, state, checkpoints, curves and metric logs."""
