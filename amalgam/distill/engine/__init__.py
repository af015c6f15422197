"""The training loop and what it stands on: batches, views, optimisers, the loss log,
distributed helpers and the training configuration."""
