"""A fixed training pool (data.train_pool): each patch keeps one noisy copy for the whole run."""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from psr.crappifiers import Chain, GaussianNoise, PoissonNoise
from psr.modules.restoration import RestorationModule
from tests.nets import TinyGenerator


def _parts() -> dict[str, Any]:
    return {
        "net": TinyGenerator(),
        "crappifier": Chain([PoissonNoise(photons=(5.0, 50.0)), GaussianNoise(sigma=(0.01, 0.05))]),
        "loss": nn.L1Loss(),
        "optimizer": partial(torch.optim.SGD, lr=1e-3),
        "panel_dir": None,
        "n_panels": 0,
    }


def test_each_patch_is_degraded_from_its_own_seed_whatever_its_batch() -> None:
    module = RestorationModule(**_parts())
    clean = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    seeds = torch.tensor([11, 22, 33])
    first = module.degrade_each(clean, seeds)["input"]
    order = torch.tensor([2, 0, 1])
    again = module.degrade_each(clean[order], seeds[order])["input"]
    assert torch.equal(again, first[order])  # the same noisy copy, in any batch and position
    other = module.degrade_each(clean, torch.tensor([12, 22, 33]))["input"]
    assert not torch.equal(other[0], first[0]) and torch.equal(other[1:], first[1:])
    assert torch.equal(module.degrade_each(clean, seeds)["target"], clean)


class _Recording(RestorationModule):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inputs: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.inputs.append(batch["input"].detach().clone())
        return super().training_step(batch, batch_idx)


def test_training_on_a_pool_sees_the_same_noisy_inputs_every_epoch() -> None:
    module = _Recording(**_parts())
    clean = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    pool = [(clean[0], 5), (clean[1], 6)]  # what PatchDataset yields with a pool: (patch, noise seed)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(pool, batch_size=2))
    assert len(module.inputs) == 2 and torch.equal(module.inputs[0], module.inputs[1])
    assert not torch.allclose(module.inputs[0], clean)  # degraded, not the clean patches
