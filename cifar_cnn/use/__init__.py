"""Using a trained model: evaluate a checkpoint on a data set, or label image files."""
