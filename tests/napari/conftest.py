"""A tiny real psr checkpoint (EDSR ×2, random weights) and test images for the napari plugin's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from psr.models.edsr import EDSR

MODEL = {
    "_target_": "psr.models.edsr.EDSR",
    "in_channels": 1,
    "out_channels": 1,
    "scale": 2,
    "n_feats": 4,
    "n_blocks": 1,
}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint as train.py writes it: weights under ``net.``, the resolved config beside them."""
    torch.manual_seed(0)
    net = EDSR(**{k: v for k, v in MODEL.items() if k != "_target_"})
    path = tmp_path_factory.mktemp("ckpt") / "edsr_x2.ckpt"
    config = {"model": MODEL, "scale": 2, "data": {"percentiles": [1.0, 99.8]}}
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "psr_config": config, "psr_generator": "net"}, path)
    return path


@pytest.fixture
def image() -> np.ndarray:
    """A 2D uint16 image with structure and noise, of odd size (tiles do not divide it)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:45, :61]
    clean = 1000 + 800 * np.sin(yy / 5.0) * np.cos(xx / 7.0)
    return (clean + rng.normal(0, 50, clean.shape)).clip(0).astype(np.uint16)
