"""``RestorationModule``: supervised restoration with on-the-fly degradation on the device."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psr.crappifiers.base import Crappifier
from psr.metrics import psnr
from psr.metrics.care import fit_affine
from psr.metrics.keys import BASELINE_PSNR, DEFAULT_MONITOR, GAIN_DB, PSNR, TEST, VAL, metric_key
from psr.metrics.restoration_metric import RestorationScores, image_scores, plane_ssim
from psr.models.protocol import check_generator

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
Batch = torch.Tensor | dict[str, torch.Tensor] | list[torch.Tensor]


VAL_SEED_STRIDE = 100_003


def val_seed_for(val_seed: int, batch_index: int) -> int:
    """The degradation seed of validation batch ``batch_index``: fixed, so every epoch sees the same pairs."""
    return val_seed * VAL_SEED_STRIDE + batch_index


def upsample_to(x: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    """Interpolate ``(B, C, *S)`` to ``size`` (the interpolation baseline, and panels)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    if x.dim() == 5 and mode in ("bilinear", "bicubic"):
        mode = "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def centre_channels(x: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` centre channels of ``(B, C, ...)``: the target frame of a multi-frame stack (PSSR-MF)."""
    c = x.shape[1]
    if n >= c:
        return x
    start = (c - n) // 2
    return x[:, start : start + n]


def _fingerprint(*tensors: torch.Tensor) -> torch.Tensor:
    """A few order-sensitive sums of ``tensors``: equal for the same data, different when it changes."""
    dtype = torch.float32 if tensors[0].device.type == "mps" else torch.float64  # MPS has no float64
    parts = []
    for t in tensors:
        flat = t.detach().flatten(1).to(dtype)
        parts += [flat.sum(), flat.square().sum(), flat.diff(dim=1).abs().sum()]
    return torch.stack(parts)


class RestorationModule(L.LightningModule):
    """Train ``net`` to invert ``crappifier`` on clean patches.

    Batches from the datamodule are clean targets ``(B, C, Y, X)``; ``on_after_batch_transfer``
    degrades them on the device into ``{"input", "target"}``. A batch that already is such a dict (real
    pairs) is used as it is. Training draws degradation parameters from a generator seeded once per
    fit; validation re-seeds per batch from ``val_seed`` so validation pairs are identical every epoch. A
    fixed training pool (``data.train_pool``) yields ``[clean, noise_seeds]``: each patch is degraded from
    its own seed, one fixed noisy copy per patch.

    Validation logs ``val/psnr`` and ``val/ssim`` of the prediction and ``val/baseline_psnr`` and
    ``val/baseline_ssim`` of the interpolated input (``baseline_mode``), all per image with the target's
    own max − min as the data range, then averaged over every image (of every DDP process) by one
    :class:`~psr.metrics.restoration_metric.RestorationScores` metric; ``test/...`` likewise. The validation
    pairs never change, so the baseline's scores of each validation batch are computed once and reused
    while the batch's input and target are unchanged. The resolved run configuration passed as ``run_config``
    is stored in every checkpoint under ``"psr_config"``. ``channels_last`` ("auto": on CUDA only) stores
    2D activations channels-last for tensor cores; ``compile`` compiles the generator (opt-in: about 35 s
    per graph on a CPU for no measured gain there).
    """

    not_hyperparameters: tuple[str, ...] = (
        "net",
        "crappifier",
        "loss",
        "optimizer",
        "scheduler",
        "run_config",
        "panel_dir",
    )

    def __init__(
        self,
        net: nn.Module,
        crappifier: Crappifier,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        monitor: str = DEFAULT_MONITOR,
        baseline_mode: str = "bilinear",
        val_seed: int = 12345,
        n_panels: int = 4,
        panel_dir: str | None = None,
        run_config: dict[str, Any] | None = None,
        channels_last: bool | str = "auto",
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = check_generator(net, "the module's net").out_channels
        self.net = net
        self.crappifier = crappifier
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.baseline_mode = baseline_mode
        self.val_seed = val_seed
        self.n_panels = n_panels
        self.panel_dir = Path(panel_dir) if panel_dir else None
        self.run_config = run_config or {}
        if channels_last not in (True, False, "auto"):
            raise ValueError(f"module.channels_last must be true, false or auto, got {channels_last!r}")
        self.channels_last = channels_last
        self.compile_net = compile
        # Objects (networks, losses, factories) stay out of the checkpoint's hyper-parameters: they are
        # rebuilt from the resolved config stored under "psr_config", so checkpoints load weights_only.
        self.save_hyperparameters(ignore=list(self.not_hyperparameters), logger=False)
        self._train_generator: torch.Generator | None = None
        self._val_batches = 0
        self.val_scores = RestorationScores()
        self.test_scores = RestorationScores()
        self.test_results: dict[str, float] = {}
        # Validation batch index -> (shapes and baseline, fingerprint of input and target, (2, B) scores).
        self._baseline_cache: dict[int, tuple[tuple[Any, ...], torch.Tensor, torch.Tensor]] = {}
        self.history: list[dict[str, float]] = []

    # --- degradation on the device -------------------------------------------------------------
    def _generator(self, seed: int) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return gen

    def _use_channels_last(self) -> bool:
        # Channels-last helps convolutions on CUDA tensor cores (bf16); on CPUs it is usually slower.
        return self.channels_last is True or (self.channels_last == "auto" and self.device.type == "cuda")

    def on_fit_start(self) -> None:
        # Drawn from the global RNG seeded by the task, offset per rank so DDP ranks differ.
        base = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self._train_generator = self._generator(base + 7919 * self.global_rank)
        if self._use_channels_last():
            self.to(memory_format=torch.channels_last)
        if self.compile_net:
            self.net.compile()  # in place: parameter names (and checkpoints) stay as they are

    def degrade(self, clean: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            degraded = self.crappifier(clean.float(), generator)
        if degraded.dim() == 4 and self._use_channels_last():
            degraded = degraded.contiguous(memory_format=torch.channels_last)
        return {"input": degraded, "target": centre_channels(clean, self.out_channels)}

    def degrade_each(self, clean: torch.Tensor, seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Degrade each patch from its own seed: the same noisy copy whenever the seed comes again."""
        parts = [
            self.degrade(clean[i : i + 1], self._generator(int(s))) for i, s in enumerate(seeds.tolist())
        ]
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        if isinstance(batch, dict):
            return batch
        if self.trainer is not None and self.trainer.training:
            if isinstance(batch, (list, tuple)):
                return self.degrade_each(batch[0], batch[1])
            if self._train_generator is None or self._train_generator.device != self.device:
                self.on_fit_start()
            assert self._train_generator is not None
            return self.degrade(batch, self._train_generator)
        if isinstance(batch, (list, tuple)):
            raise TypeError("validation batches are clean patches or real pairs, not a training pool's")
        gen = self._generator(val_seed_for(self.val_seed, self._val_batches))
        self._val_batches += 1
        return self.degrade(batch, gen)

    # --- steps ---------------------------------------------------------------------------------
    @property
    def eval_net(self) -> nn.Module:
        """The generator used for validation, checkpoints' exported weights and prediction."""
        return self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_net(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self.net(batch["input"])
        loss = self.loss_fn(pred.float(), batch["target"].float())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        if self.trainer is not None and self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=pred.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_batches = 0
        self.val_scores.reset()

    def _score(
        self, batch: dict[str, torch.Tensor], scores: RestorationScores, cache_key: int | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Add the batch's loss and per-image PSNR and SSIM (model and baseline) to ``scores``; return
        ``(input, prediction, target)``. ``cache_key`` (validation: the batch index) reuses the baseline's
        scores of an unchanged batch."""
        inp, target = batch["input"], batch["target"].float()
        pred = self.eval_net(inp).float()
        loss = self.loss_fn(pred, target)
        real = "real" in batch
        # Real pairs were rescaled per image by their publishers: score each restoration (and the
        # baseline) after its least-squares affine fit to the target (the CARE convention).
        scored = fit_affine(pred, target).float() if real else pred
        baseline = self._baseline_scores(inp, target, real, cache_key)
        scores.update(scored, target, baseline_scores=baseline, loss=loss.detach())
        return inp, pred, target

    def _baseline_scores(
        self, inp: torch.Tensor, target: torch.Tensor, real: bool, cache_key: int | None
    ) -> torch.Tensor:
        """``(2, B)`` PSNR and SSIM of the ``baseline_mode`` interpolation of the input's centre frame(s)
        (those the target holds), cached under ``cache_key`` with a fingerprint of input and target: a
        batch whose data changed (another datamodule, another seed) is scored again."""
        key = (tuple(inp.shape), tuple(target.shape), self.baseline_mode, real, inp.device)
        fingerprint = _fingerprint(inp, target) if cache_key is not None else None
        cached = self._baseline_cache.get(cache_key) if cache_key is not None else None
        if (
            cached is not None
            and fingerprint is not None
            and cached[0] == key
            and torch.equal(cached[1], fingerprint)
        ):
            return cached[2]
        scores = self._score_baseline(inp, target, real)
        if cache_key is not None:
            assert fingerprint is not None
            self._baseline_cache[cache_key] = (key, fingerprint, scores)
        return scores

    def _score_baseline(self, inp: torch.Tensor, target: torch.Tensor, real: bool) -> torch.Tensor:
        baseline = upsample_to(
            centre_channels(inp.float(), target.shape[1]), tuple(target.shape[2:]), self.baseline_mode
        )
        return image_scores(fit_affine(baseline, target).float() if real else baseline, target)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        inp, pred, target = self._score(batch, self.val_scores, cache_key=batch_idx)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_panels(inp, pred, target, real="real" in batch)

    def _log_scores(self, scores: RestorationScores, stage: str) -> dict[str, float] | None:
        """Log the means over every image of the epoch (all DDP processes); ``None`` when there was none."""
        means = scores.compute()
        if not means:
            return None
        metrics = {metric_key(stage, k): float(v) for k, v in means.items()}
        self.log_dict(metrics, prog_bar=False)
        gain = metrics[metric_key(stage, PSNR)] - metrics[metric_key(stage, BASELINE_PSNR)]
        self.log(metric_key(stage, GAIN_DB), gain, prog_bar=True)
        return metrics

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_scores(self.val_scores, VAL)
        if metrics is not None and not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, "step": self.global_step, **metrics})

    # --- test: real pairs held out from validation (data=pairs data.test_pairs) ---------------------
    def on_test_epoch_start(self) -> None:
        self.test_scores.reset()
        self.test_results = {}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._score(batch, self.test_scores)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_scores(self.test_scores, TEST) or {}

    # --- panels --------------------------------------------------------------------------------
    def _log_panels(
        self, inp: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, real: bool = False
    ) -> None:
        """Draw the first ``n_panels`` validation images as input | prediction | target | baseline with
        their PSNR and SSIM (and a scale bar where the images' pixel size is known); save the PNG as
        ``panel_dir/val_epochNNN.png`` and send it to the loggers that take images (W&B)."""
        n = min(self.n_panels, target.shape[0])
        log_images = [log for lg in self.loggers if callable(log := getattr(lg, "log_image", None))]
        save = self.panel_dir is not None and self.global_rank == 0
        if n == 0 or not (save or log_images):
            return
        from psr.reporting.panels import PanelRow, source_pixel_size, validation_panel

        target = target[:n].float()
        size = tuple(target.shape[2:])
        shown = centre_channels(inp[:n].float(), target.shape[1])
        prediction, baseline = pred[:n].float(), upsample_to(shown, size, self.baseline_mode)
        if real:  # shown and scored as validation scores real pairs: after the affine fit to the target
            prediction, baseline = (
                fit_affine(prediction, target).float(),
                fit_affine(baseline, target).float(),
            )
        scores = [
            s.detach().cpu().tolist()
            for s in (
                psnr(prediction, target),
                plane_ssim(prediction, target),
                psnr(baseline, target),
                plane_ssim(baseline, target),
            )
        ]

        def plane(x: torch.Tensor) -> np.ndarray:  # (n, C, [Z,] Y, X) -> (n, Y, X): channel 1, middle Z
            first = x[:, 0]
            return (first[:, first.shape[1] // 2] if first.dim() == 4 else first).detach().cpu().numpy()

        tiles = [plane(t) for t in (upsample_to(shown, size, "nearest"), prediction, target, baseline)]
        rows = [PanelRow(*(t[i] for t in tiles), *(v[i] for v in scores)) for i in range(n)]
        if not hasattr(self, "_panel_pixel"):  # once per run: the store's metadata does not change
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            self._panel_pixel = source_pixel_size(datamodule)
        pixel_size, unit = self._panel_pixel or (None, None)
        notes = [f"channel 1 of {target.shape[1]}"] if target.shape[1] > 1 else []
        notes += [f"the middle plane of {size[0]}"] if target.dim() == 5 else []
        notes += (
            ["real pairs: prediction and baseline after their least-squares fit to the target"]
            if real
            else []
        )
        baseline_name = self.baseline_mode if tuple(inp.shape[2:]) != size else "identity"
        image = validation_panel(
            rows,
            baseline_name=baseline_name,
            pixel_size=pixel_size,
            unit=unit,
            title=f"validation · epoch {self.current_epoch} · step {self.global_step}",
            note="; ".join(notes),
        )
        if save:
            from skimage.io import imsave

            assert self.panel_dir is not None
            self.panel_dir.mkdir(parents=True, exist_ok=True)
            imsave(self.panel_dir / f"val_epoch{self.current_epoch:03d}.png", image, check_contrast=False)
        caption = (
            f"input (nearest) | prediction | target | baseline ({baseline_name}), epoch {self.current_epoch}"
        )
        for log_image in log_images:
            log_image(key=metric_key(VAL, "panels"), images=[image], caption=[caption], step=self.global_step)

    # --- optimisation and checkpoints ----------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self._make_scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """Build the configured schedule; those that need the run length (cosine: T_max) get it from the
        trainer, never from a copied number."""
        assert self.scheduler_factory is not None
        steps = float(self.trainer.estimated_stepping_batches) if self.trainer is not None else 1.0
        total = max(1, int(steps)) if math.isfinite(steps) else 1
        accepts = inspect.signature(self.scheduler_factory).parameters
        extra = {"T_max": total} if "T_max" in accepts else {}
        return self.scheduler_factory(optimizer=optimizer, **extra)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["psr_config"] = self.run_config
        # Which submodule holds the generator to deploy ("net", or "ema_net" for an EMA generator).
        checkpoint["psr_generator"] = "net" if self.eval_net is self.net else "ema_net"
        checkpoint["psr_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("psr_history", []))
