"""Semantic and instance segmentation: models, training, evaluation, prediction, export."""
