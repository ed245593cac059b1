"""Training stage: the loop, its runtime (devices, torchrun), checkpoints, metrics, plots and MLflow tracking."""
