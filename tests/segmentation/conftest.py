"""Tiny labelled data sets for the segmentation tests: discs on a noisy background, written as TIFFs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch


def discs(size: int, n: int, seed: int) -> np.ndarray:
    """An instance map ``(size, size)`` uint16 of ``n`` non-overlapping discs (ids 1..n)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    label = np.zeros((size, size), np.uint16)
    placed = 0
    while placed < n:
        cy, cx = rng.integers(6, size - 6, 2)
        r = int(rng.integers(3, 6))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if (label[disc] == 0).all():
            placed += 1
            label[disc] = placed
    return label


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``(images, masks)`` folders of ``n`` images; ``semantic`` masks hold 0/1 classes, else instance ids."""

    def _write(n: int = 4, size: int = 48, semantic: bool = False) -> tuple[Path, Path]:
        images, masks = tmp_path / "images", tmp_path / "masks"
        images.mkdir(exist_ok=True)
        masks.mkdir(exist_ok=True)
        for i in range(n):
            label = discs(size, 4, i)
            noise = np.random.default_rng(100 + i).normal(0, 8, label.shape)
            image = (20 + 100 * (label > 0) + noise).astype(np.float32)
            tifffile.imwrite(images / f"{i}.tif", image)
            tifffile.imwrite(masks / f"{i}.tif", (label > 0).astype(np.uint8) if semantic else label)
        return images, masks

    return _write


@pytest.fixture(scope="session")
def trained_discs(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, torch.Tensor]:
    """A tiny CARE U-Net trained to segment disc instances (30 steps, about 2 s): the module, its
    checkpoint (stored config as segment.py writes it, panels beside it) and an input image ``(1, 1, 32, 32)``."""
    from functools import partial

    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    from psr.modules.segmentation import SegmentationModule
    from psr.tasks.segment import configure_model
    from tests.conftest import CONF

    folder = tmp_path_factory.mktemp("discs")
    torch.manual_seed(0)
    label = torch.stack([torch.from_numpy(discs(32, 3, s).astype("int64")) for s in range(4)])
    image = (label > 0).float()[:, None] + 0.1 * torch.randn(4, 1, 32, 32)
    data = [{"image": image[i : i + 2], "label": label[i : i + 2]} for i in (0, 2)]
    cfg = OmegaConf.create({"model": OmegaConf.load(CONF / "model" / "care_unet.yaml")})
    cfg.model.n_filter_base = 8
    cfg.module = {"mode": "instance"}
    configure_model(cfg, 1)
    run_config = {
        "model": OmegaConf.to_container(cfg.model, resolve=False),
        "module": {
            "_target_": "psr.modules.segmentation.SegmentationModule",
            "mode": "instance",
            "classes": 3,
        },
        "data": {"percentiles": [1.0, 99.8]},
    }
    module = SegmentationModule(
        instantiate(cfg.model),
        partial(torch.optim.Adam, lr=1e-2),
        mode="instance",
        panel_dir=str(folder / "panels"),
        run_config=run_config,
    )
    trainer = L.Trainer(
        max_epochs=15,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=15,
    )
    trainer.fit(
        module,
        train_dataloaders=DataLoader([data[0]] * 2, batch_size=None),
        val_dataloaders=DataLoader([data[1]], batch_size=None),
    )
    ckpt = folder / "seg.ckpt"
    trainer.save_checkpoint(ckpt)
    return module, ckpt, image[:1]
