"""Inference: rebuilding models from checkpoints, tiled prediction."""
