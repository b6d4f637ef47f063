"""Experiments of the poster: methods, models, data, the training loop, evaluation and recipes."""
