"""Fixtures for prediction tests: a tiny trained checkpoint, random-weight checkpoints, small nets with a
known receptive field, and composing ``conf/predict.yaml``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from psr.inference.checkpoint import LoadedModel
from tests.conftest import CONF, TINY


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """RCAN ×4, 1 channel, trained for one tiny epoch on the demo phantoms (about a second)."""
    from psr.tasks.train import train

    run = tmp_path_factory.mktemp("trained")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY,
                f"paths.output_dir={run}",
                f"paths.cache_dir={cache_dir}",
                "trainer.max_epochs=1",
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        summary = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return Path(summary["best_checkpoint"])


def random_checkpoint(path: Path, *overrides: str) -> Path:
    """A psr checkpoint of a composed model config with random weights (no training)."""
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=unused", "logger=none", *overrides])
    GlobalHydra.instance().clear()
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "psr_config": config, "psr_generator": "net"}, path)
    return path


@pytest.fixture
def compose_predict(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose ``conf/predict.yaml`` as the entry point does (no progress bar)."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("predict", overrides=["progress=false", *overrides])

    yield _compose
    GlobalHydra.instance().clear()


class LocalNet(nn.Module):
    """Two 3×3 convolutions and a pixel shuffle: receptive-field radius 2 input pixels, deterministic.

    ``dims=3`` uses 3×3×3 convolutions and shuffles laterally (Z keeps its size), like RCAN3D.
    """

    def __init__(self, scale: int = 2, channels: int = 1, dims: int = 2, seed: int = 0) -> None:
        super().__init__()
        from psr.models.layers import PixelShuffle3dLateral, conv_nd

        generator = torch.Generator().manual_seed(seed)
        conv = conv_nd(dims)
        self.spatial_dims, self.scale = dims, scale
        self.in_channels = self.out_channels = channels
        self.body = nn.Sequential(
            conv(channels, 6, 3, padding=1),
            nn.Tanh(),
            conv(6, channels * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale) if dims == 2 else PixelShuffle3dLateral(scale),
        )
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class IsotropicNet(nn.Module):
    """A blur with a kernel symmetric under flips and 90° rotations, then nearest ×scale: it commutes
    with every transform test-time augmentation applies."""

    spatial_dims = 2

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale, self.in_channels, self.out_channels = scale, 1, 1
        kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 8.0, 2.0], [1.0, 2.0, 1.0]]) / 20.0
        self.register_buffer("kernel", kernel[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.conv2d(x, self.kernel, padding=1)
        return y.repeat_interleave(self.scale, -2).repeat_interleave(self.scale, -1)


def loaded(net: nn.Module, **config: Any) -> LoadedModel:
    """A ``LoadedModel`` around an in-memory net (the training percentiles unless given)."""
    return LoadedModel(
        net=net.eval(), config={"data": {"percentiles": [1.0, 99.8]}, **config}, path=Path("mem")
    )
