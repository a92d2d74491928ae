"""Tasks: the only package that reads Hydra configs (train, and the tasks that build on it)."""
