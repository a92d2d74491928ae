"""Shared fixtures: config composition with tiny settings, and tiny zarr images."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

# tests/data/test_augment.py imports albumentations itself, before psr.data.augment would set this
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

# Tiny tensors: one intra-op thread avoids thread start-up and contention costs that dominate them.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small enough to run a training step in about a second on one CPU core.
TINY = [
    "data.n_images=3",
    "data.image_size=64",
    "data.patch_size=32",
    "data.batch_size=2",
    "data.samples_per_epoch=4",
    "data.val_samples=2",
    "data.num_workers=0",
    "logger=none",
]


def config_names(group: str) -> list[str]:
    """Every choice of a config group: files added later are tested automatically."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(autouse=True)
def _no_log_handlers_on_closed_streams() -> Iterator[None]:
    """An entry point run in-process (``main()``) lets Hydra configure logging with a console handler on
    the test's captured stdout, which pytest closes after the test: drop such handlers, so that a later
    test's log records do not meet a closed stream (whatever order the tests run in)."""
    yield
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
                logger.removeHandler(handler)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("psr-cache")


def _overrides_data(experiment: str) -> bool:
    """Whether ``conf/experiment/<experiment>.yaml``, or an experiment its defaults list includes, replaces
    the data group (then the tiny demo settings do not apply)."""
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    if "override /data" in text:
        return True
    included = re.findall(r"^\s*-\s*([A-Za-z0-9_]+)\s*$", text, flags=re.MULTILINE)
    return any((CONF / "experiment" / f"{name}.yaml").exists() and _overrides_data(name) for name in included)


@pytest.fixture
def compose_cfg(tmp_path: Path, cache_dir: Path) -> Iterator[Callable[..., object]]:
    """Compose ``conf/train.yaml`` like the entry point does, with the run folder in ``tmp_path``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    def _compose(*overrides: str, tiny: bool = True, config_name: str = "train"):  # noqa: ANN202
        GlobalHydra.instance().clear()
        base = TINY if tiny else []
        if any(o.startswith("data=") and o != "data=demo" for o in overrides) or any(
            o.startswith("experiment=") and _overrides_data(o.split("=", 1)[1]) for o in overrides
        ):
            base = [o for o in base if not o.startswith(("data.n_images", "data.image_size"))]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name,
                overrides=[
                    *base,
                    f"paths.output_dir={tmp_path / 'run'}",
                    f"paths.cache_dir={cache_dir}",
                    *overrides,
                ],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # the entry point's cfg has no hydra node either
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def compose_entry(run: Path, cache: Path, *overrides: str, config: str = "train") -> object:
    """Compose ``conf/<config>.yaml`` as its entry point does (Hydra's config set, its node removed); for
    ``train``, with the tiny settings (not the demo's image count and size when ``data=`` changes), the
    run folder ``run`` and the cache ``cache``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    other_data = any(o.startswith("data=") for o in overrides)
    tiny = [o for o in TINY if not (other_data and o.startswith(("data.n_images", "data.image_size")))]
    base = [*tiny, f"paths.output_dir={run}", f"paths.cache_dir={cache}"] if config == "train" else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=[*base, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def configure(tmp_path: Path, cache_dir: Path) -> Iterator:
    """Compose a config as its entry point does: ``configure(*overrides, config="train")`` (the reliability
    tests: ``test_reliability.py`` and ``test_reliability_runs.py``)."""
    from hydra.core.global_hydra import GlobalHydra

    yield lambda *o, config="train": compose_entry(tmp_path / "run", cache_dir, *o, config=config)
    GlobalHydra.instance().clear()


@pytest.fixture
def write_zarr(tmp_path: Path) -> Callable[..., Path]:
    """Write ``array`` as a bare zarr array under ``tmp_path`` and return its path."""

    def _write(array: np.ndarray, name: str = "image.zarr") -> Path:
        path = tmp_path / name
        z = zarr.create_array(str(path), shape=array.shape, dtype=array.dtype, chunks=array.shape or (1,))
        if array.size:
            z[...] = array
        return path

    return _write


def run_train(
    args: list[str], cache_dir: Path, *, wandb_mode: str = "disabled", timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """``python train.py <args>`` from the project root, as a user runs it, with the test cache; asserts exit 0."""
    env = {**os.environ, "PSR_CACHE_DIR": str(cache_dir), "WANDB_MODE": wandb_mode, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "train.py", *args, f"paths.cache_dir={cache_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result
