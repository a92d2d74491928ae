"""``GANModule``: adversarial restoration training (ESRGAN / Real-ESRGAN style) on degraded clean data.

The generator loss is ``pixel_weight · pixel + perceptual_weight · perceptual + adversarial_weight ·
adversarial``; the discriminator takes ``d_steps`` steps per generator step (manual optimisation). An
exponential moving average of the generator weights (``ema_decay``, 0.999 as in Real-ESRGAN) is what
validation, checkpoints (``psr_generator = "ema_net"``) and export use. ``init_from`` warm-starts the
generator from a restoration checkpoint, as ESRGAN starts from its PSNR-oriented model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from psr.crappifiers.base import Crappifier
from psr.inference.checkpoint import CheckpointError, generator_state, load_state_into, read_checkpoint
from psr.modules.restoration import OptimizerFactory, RestorationModule, SchedulerFactory


class GANObjective(Protocol):
    """What the module needs from a GAN loss (see ``psr.modules.losses``)."""

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor: ...

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor: ...


def load_generator_weights(net: nn.Module, checkpoint_path: str | Path) -> int:
    """Copy every generator weight of a psr checkpoint into ``net``; return how many tensors were loaded.

    Reads the deployable generator (``psr_generator``: ``net`` or ``ema_net``). Raises ``ValueError``
    naming the file when it is not a psr checkpoint or its generator does not match ``net``.
    """
    try:
        return load_state_into(net, generator_state(read_checkpoint(checkpoint_path)), checkpoint_path)
    except CheckpointError as err:
        raise ValueError(f"init_from: {err}") from err


class GANModule(RestorationModule):
    """Generator ``net`` against ``discriminator``; validation and checkpoints use the EMA generator."""

    not_hyperparameters = (
        *RestorationModule.not_hyperparameters,
        "discriminator",
        "gan_loss",
        "d_optimizer",
        "perceptual",
    )

    def __init__(
        self,
        net: nn.Module,
        crappifier: Crappifier,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        discriminator: nn.Module,
        gan_loss: GANObjective,
        d_optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        perceptual: Callable[[], nn.Module] | None = None,
        pixel_weight: float = 1.0,
        perceptual_weight: float = 0.0,
        adversarial_weight: float = 0.1,
        d_steps: int = 1,
        ema_decay: float = 0.999,
        init_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, crappifier, loss, optimizer, scheduler, **kwargs)
        for name, value in (
            ("pixel_weight", pixel_weight),
            ("perceptual_weight", perceptual_weight),
            ("adversarial_weight", adversarial_weight),
        ):
            if value < 0:
                raise ValueError(f"module.{name} must be >= 0, got {value}")
        if d_steps < 1:
            raise ValueError(f"module.d_steps must be >= 1, got {d_steps}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"module.ema_decay must be in [0, 1), got {ema_decay}")
        if perceptual_weight > 0 and perceptual is None:
            raise ValueError("module.perceptual_weight > 0 needs a module.perceptual loss factory")
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.gan_loss = gan_loss
        self.d_optimizer_factory = d_optimizer
        # A factory, so the VGG network is only built (and its weights only looked for) when it is used.
        self.perceptual = perceptual() if perceptual is not None and perceptual_weight > 0 else None
        resolve = getattr(self.perceptual, "resolve_weights", None)
        if callable(resolve):
            resolve()  # fail at start-up, not at the first step, when the VGG weights are missing
        self.pixel_weight, self.perceptual_weight = pixel_weight, perceptual_weight
        self.adversarial_weight = adversarial_weight
        self.d_steps = d_steps
        self.ema_decay = ema_decay
        if init_from:
            load_generator_weights(self.net, init_from)
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False)
        self.ema_updates = 0
        self.update_log: list[str] = []  # "d" / "g" per optimiser step of the current training step

    @property
    def eval_net(self) -> nn.Module:
        return self.ema_net

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["psr_ema_updates"] = self.ema_updates

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.ema_updates = int(checkpoint.get("psr_ema_updates", 0))

    def configure_optimizers(self) -> Any:
        opt_g = self.optimizer_factory(params=self.net.parameters())
        opt_d = self.d_optimizer_factory(params=self.discriminator.parameters())
        if self.scheduler_factory is None:
            return [opt_g, opt_d]
        schedulers = [self._make_scheduler(opt) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], [{"scheduler": s, "interval": "step"} for s in schedulers]

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema ← d · ema + (1 − d) · net`` for parameters; buffers (e.g. BN statistics) copied.

        ``d = min(ema_decay, (1 + n) / (10 + n))`` after ``n`` updates: the usual warm-up, so that the
        average follows the generator early on instead of staying at its initialisation for ~1/(1 − d)
        steps (which would make short runs validate an untrained network).
        """
        n = self.ema_updates
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        self.ema_updates += 1
        ema_params: list[torch.Tensor] = list(self.ema_net.parameters())
        params: list[torch.Tensor] = [p.detach() for p in self.net.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buf, buf in zip(self.ema_net.buffers(), self.net.buffers(), strict=True):
            ema_buf.copy_(buf)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        opt_g, opt_d = self.optimizers()  # type: ignore[misc, attr-defined]
        inp, target = batch["input"], batch["target"].float()
        n = target.shape[0]
        self.update_log = []

        with torch.no_grad():
            fake = self.net(inp).float()
        self.toggle_optimizer(opt_d)
        for _ in range(self.d_steps):
            real_logits = self.discriminator(target)
            fake_logits = self.discriminator(fake)
            d_loss = self.gan_loss.discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
            self.update_log.append("d")
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        fake = self.net(inp).float()
        pixel = self.loss_fn(fake, target)
        adversarial = self.gan_loss.generator_loss(self.discriminator(fake))
        g_loss = self.pixel_weight * pixel + self.adversarial_weight * adversarial
        terms = {"train/pixel": pixel.detach(), "train/adversarial": adversarial.detach()}
        if self.perceptual is not None:
            perceptual = self.perceptual(fake, target)
            g_loss = g_loss + self.perceptual_weight * perceptual
            terms["train/perceptual"] = perceptual.detach()
        if not torch.isfinite(g_loss) or not torch.isfinite(d_loss):
            raise FloatingPointError(
                f"GAN losses became g={g_loss.item()}, d={d_loss.item()} at step {self.global_step}"
            )
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.update_log.append("g")
        self.untoggle_optimizer(opt_g)
        self.update_ema()

        schedulers = self.lr_schedulers()
        for sched in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            sched.step()  # type: ignore[call-arg]  # step-interval schedules (cosine); no plateau schedules
        self.log_dict(
            {
                "train/loss": g_loss.detach(),
                "train/d_loss": d_loss.detach(),
                "train/d_real": torch.sigmoid(real_logits.detach()).mean(),
                "train/d_fake": torch.sigmoid(fake_logits.detach()).mean(),
                **terms,
            },
            prog_bar=False,
            batch_size=n,
        )
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, batch_size=n)
        return g_loss.detach()
