"""Training: state, partitioning, checkpoints, objectives and the one train loop."""
