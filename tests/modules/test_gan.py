"""The adversarial module: alternating updates, EMA, warm start, and training through train.py."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from psr.crappifiers import Downsample
from psr.modules.gan import GANModule, load_generator_weights
from psr.modules.losses import LSGANLoss
from psr.tasks.errors import ConfigError
from psr.tasks.train import train


class TinyGenerator(nn.Module):
    scale, spatial_dims = 2, 2
    in_channels = out_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(x))


class TinyDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_module(d_steps: int = 1, **kwargs) -> GANModule:  # noqa: ANN003
    return GANModule(
        net=TinyGenerator(),
        crappifier=Downsample(2),
        loss=nn.L1Loss(),
        optimizer=partial(torch.optim.Adam, lr=1e-2),
        discriminator=TinyDiscriminator(),
        gan_loss=LSGANLoss(),
        d_optimizer=partial(torch.optim.Adam, lr=1e-2),
        d_steps=d_steps,
        **{"ema_decay": 0.5, **kwargs},
    )


class Recorder(L.Callback):
    """Which optimiser stepped, in order, and the parameters before and after one training step."""

    def __init__(self) -> None:
        self.logs: list[list[str]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.logs.append(list(module.update_log))


@pytest.mark.parametrize("d_steps", [1, 3])
def test_updates_alternate_and_ema_follows(d_steps: int) -> None:
    torch.manual_seed(0)
    module = tiny_module(d_steps=d_steps)
    g0 = [p.detach().clone() for p in module.net.parameters()]
    d0 = [p.detach().clone() for p in module.discriminator.parameters()]
    ema0 = [p.detach().clone() for p in module.ema_net.parameters()]
    recorder = Recorder()
    trainer = L.Trainer(
        max_steps=3 * (d_steps + 1),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        accelerator="cpu",
        limit_val_batches=0,
    )
    data = DataLoader([torch.rand(1, 16, 16) for _ in range(8)], batch_size=4)
    trainer.fit(module, train_dataloaders=data)
    assert recorder.logs == [["d"] * d_steps + ["g"]] * 3
    assert all(not torch.equal(a, b) for a, b in zip(g0, module.net.parameters(), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(d0, module.discriminator.parameters(), strict=True))
    # The EMA moved from its start towards the generator, but is not the generator.
    for start, ema, live in zip(ema0, module.ema_net.parameters(), module.net.parameters(), strict=True):
        assert not torch.equal(start, ema) and not torch.equal(ema, live)
    assert not any(p.requires_grad for p in module.ema_net.parameters())
    assert module.eval_net is module.ema_net


def test_ema_update_is_an_exponential_average() -> None:
    module = tiny_module()
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(1.0)
    module.ema_updates = 100  # past the warm-up: the configured decay (0.5) applies
    before = [p.detach().clone() for p in module.ema_net.parameters()]
    module.update_ema()
    for b, e, n in zip(before, module.ema_net.parameters(), module.net.parameters(), strict=True):
        assert torch.allclose(e, 0.5 * b + 0.5 * n)
    fresh = tiny_module(ema_decay=0.999)  # warm-up: the first update uses decay 1/10
    with torch.no_grad():
        for p in fresh.net.parameters():
            p.add_(1.0)
    before = [p.detach().clone() for p in fresh.ema_net.parameters()]
    fresh.update_ema()
    for b, e, n in zip(before, fresh.ema_net.parameters(), fresh.net.parameters(), strict=True):
        assert torch.allclose(e, 0.1 * b + 0.9 * n)


def test_warm_start_loads_every_generator_weight(compose_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    first = train(compose_cfg("trainer.max_epochs=1"))
    ckpt = first["best_checkpoint"]
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    from hydra.utils import instantiate

    net = instantiate(compose_cfg().model)
    assert load_generator_weights(net, ckpt) == len(net.state_dict())
    for key, value in net.state_dict().items():
        assert torch.equal(value, saved[f"net.{key}"])
    # Through the config: the GAN run starts from those weights (generator and its EMA).
    summary = train(
        compose_cfg("module=gan", "discriminator=patchgan", f"module.init_from={ckpt}", "debug=fdr")
    )
    assert np.isfinite(summary["best"]["val/psnr"])
    with pytest.raises(ValueError, match="does not match the model"):
        load_generator_weights(instantiate(compose_cfg("model=unet").model), ckpt)
    with pytest.raises(ValueError, match="does not exist"):
        load_generator_weights(net, tmp_path / "nope.ckpt")


@pytest.mark.parametrize("discriminator", ["unet_sn", "patchgan"])
def test_gan_trains_through_train_py(compose_cfg, discriminator: str) -> None:  # noqa: ANN001
    summary = train(
        compose_cfg(
            "model=rcan",
            "crappifier=poisson",
            "module=gan",
            f"discriminator={discriminator}",
            "trainer.max_epochs=2",
            "logger=csv",
        )
    )
    assert summary["steps"] > 0
    for key in ("val/psnr", "val/ssim"):
        assert np.isfinite(summary["best"][key])
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["psr_generator"] == "ema_net"
    assert any(k.startswith("ema_net.") for k in ckpt["state_dict"])


def test_gan_without_discriminator_is_a_config_error(compose_cfg) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="needs a discriminator"):
        train(compose_cfg("module=gan"))
