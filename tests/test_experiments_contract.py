"""Contract over every ``conf/experiment/*.yaml``: it composes with the primary config its usage line names
(``python <entry>.py experiment=<name>``; ``train`` when it names none), its whole config resolves, the
metric sweepers optimise is the monitored one, and for restoration recipes the crappifier and the model fit
together: a clean patch of the recipe's size, degraded and restored, comes back at its own size."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF, config_names


def entry_point(experiment: str) -> str:
    """The primary config of an experiment: the entry point its usage line runs it with."""
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    found = set(re.findall(rf"python (\w+)\.py[^\n]*experiment={re.escape(experiment)}\b", text))
    assert len(found) <= 1, f"experiment {experiment} names several entry points {sorted(found)}"
    name = found.pop() if found else "train"
    assert (CONF / f"{name}.yaml").exists(), f"experiment {experiment} names {name}.py, which has no config"
    return name


@pytest.mark.parametrize("experiment", config_names("experiment"))
def test_every_experiment_composes_resolves_and_fits_together(
    compose_cfg: Callable[..., object], experiment: str
) -> None:
    primary = entry_point(experiment)
    cfg = compose_cfg(f"experiment={experiment}", tiny=False, config_name=primary)
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert isinstance(resolved, dict)
    if "optimized_metric" in cfg:
        assert cfg.optimized_metric == cfg.module.monitor
    if primary != "train":
        return
    scale = int(cfg.scale)
    crappifier = instantiate(cfg.crappifier)
    torch.manual_seed(0)
    net = instantiate(cfg.model).eval()
    assert crappifier.scale == net.scale == scale == int(cfg.data.scale)
    patch = cfg.data.patch_size
    dims = int(cfg.data.get("spatial_dims", 2))
    size = list(patch) if not isinstance(patch, int) else [int(patch)] * dims
    assert all(s % scale == 0 for s in size[-2:]), f"data.patch_size {size} is not divisible by {scale}"
    clean = torch.rand(1, net.in_channels, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        low = crappifier(clean, torch.Generator().manual_seed(2))
        restored = net(low)
    assert tuple(restored.shape) == (1, net.out_channels, *size)
    assert torch.isfinite(restored).all()
