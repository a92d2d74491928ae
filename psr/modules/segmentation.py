"""``SegmentationModule``: semantic or instance segmentation, optionally on crappified inputs.

Batches are ``{"image": (B, C, Y, X), "label": (B, Y, X)}`` (``psr.data.labelled``). The network's output is
``(B, K, Y, X)`` logits: ``K = 1`` for two classes (background / foreground, a sigmoid), else ``K =
classes`` (a softmax). The loss is binary or categorical cross-entropy plus ``dice_weight`` × the soft Dice
loss of the foreground classes (Milletari et al., V-Net, 3DV 2016), computed over the whole batch.

``mode="instance"``: the labels are instance ids; on the device they become three classes (background,
interior, boundary; ``psr.metrics.segmentation.three_class_targets``), the network learns those, and
validation turns its probabilities back into instances by seeded watershed and scores them by matching
(F1 / AP at IoU ``match_iou``). ``mode="semantic"`` with ``boundary_class`` (e.g. membranes) scores the
regions between predicted boundaries the same way against the regions between the true ones.

``crappifier``: the degradations of ``psr.crappifiers`` as an input-only augmentation. Each training batch
(and each validation batch, with fixed seeds) is degraded on the device, resized back to the label grid
when the crappifier downsamples, and segmented; the labels are unchanged. A model trained so works on
low-quality images directly — the alternative to restoring them first.

Validation logs ``val/iou`` and ``val/dice`` (mean over the foreground classes), ``val/iou/<class>`` and
``val/dice/<class>`` per class (from a confusion matrix over every validation pixel), ``val/loss``, and
with instances ``val/f1``, ``val/ap``, ``val/precision``, ``val/recall``. Panels show the input, the
prediction and the labels over the image.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psr.metrics import keys
from psr.metrics.segmentation import (
    BOUNDARY,
    Matching,
    confusion_matrix,
    instances_from_boundary,
    instances_from_three_class,
    iou_dice,
    match_instances,
    regions_of,
    three_class_targets,
)
from psr.models.protocol import check_generator

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
MODES = ("semantic", "instance")
INSTANCE_CLASSES = ("background", "interior", "boundary")
# Overlay colours (RGB, 0..1) for classes 1, 2, …; class 0 (background) is not drawn.
PALETTE = np.array(
    [[1.0, 0.2, 0.2], [0.2, 0.9, 0.2], [0.3, 0.5, 1.0], [1.0, 0.8, 0.1], [0.9, 0.3, 0.9], [0.1, 0.9, 0.9]]
)


def output_channels(mode: str, classes: int) -> int:
    """Channels the network must output: 1 for two semantic classes (sigmoid), else one per class."""
    if mode == "instance":
        return len(INSTANCE_CLASSES)
    return 1 if classes == 2 else classes


def probabilities(logits: torch.Tensor, classes: int) -> torch.Tensor:
    """``(B, K, …)`` logits → ``(B, classes, …)`` class probabilities (sigmoid for ``K = 1``)."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """``1 −`` the mean soft Dice of ``classes`` over the batch: ``probs (B, K, …)``, ``target (B, …)``."""
    dims = (0, *range(2, probs.dim()))
    onehot = F.one_hot(target.long(), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + 1.0) / (total + 1.0)
    return 1 - dice[list(classes)].mean()


class SegmentationModule(L.LightningModule):
    """Train ``net`` to segment ``classes`` classes (see the module docstring)."""

    not_hyperparameters: tuple[str, ...] = (
        "net",
        "crappifier",
        "optimizer",
        "scheduler",
        "run_config",
        "panel_dir",
    )

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        classes: int = 2,
        mode: str = "semantic",
        class_names: Sequence[str] | None = None,
        boundary_class: int | None = None,
        dice_weight: float = 1.0,
        class_weights: Sequence[float] | None = None,
        crappifier: nn.Module | None = None,
        degrade_validation: bool = True,
        match_iou: float = 0.5,
        threshold: float = 0.5,
        monitor: str = keys.SEGMENTATION_MONITOR,
        val_seed: int = 12345,
        n_panels: int = 2,
        panel_dir: str | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Plain lists (Hydra passes ListConfigs): the hyper-parameters saved below must load weights_only.
        class_names = [str(n) for n in class_names] if class_names is not None else None
        class_weights = [float(w) for w in class_weights] if class_weights is not None else None
        if mode not in MODES:
            raise ValueError(f"module.mode={mode!r}; expected one of {', '.join(MODES)}")
        self.mode = mode
        self.classes = len(INSTANCE_CLASSES) if mode == "instance" else int(classes)
        if self.classes < 2:
            raise ValueError(f"classes={classes}; expected at least 2 (the background and one class)")
        names = list(INSTANCE_CLASSES) if mode == "instance" else list(class_names or [])
        if not names:
            names = ["background", *(f"class{c}" for c in range(1, self.classes))]
        if len(names) != self.classes:
            raise ValueError(f"module.class_names has {len(names)} names for {self.classes} classes")
        self.class_names = names
        if boundary_class is not None and not 0 < int(boundary_class) < self.classes:
            raise ValueError(
                f"module.boundary_class={boundary_class}; expected a class in 1..{self.classes - 1}"
            )
        self.boundary_class = BOUNDARY if mode == "instance" else boundary_class
        expected = output_channels(mode, self.classes)
        generator = check_generator(net, "the segmentation model")
        if generator.out_channels != expected:
            raise ValueError(
                f"the model outputs {generator.out_channels} channel(s) but {mode} segmentation of"
                f" {self.classes} classes needs {expected}"
            )
        if generator.scale != 1:
            raise ValueError(
                f"a segmentation model keeps the image size; the model has scale {generator.scale}"
            )
        if class_weights is not None and len(class_weights) != self.classes:
            raise ValueError(
                f"module.class_weights has {len(class_weights)} values for {self.classes} classes"
            )
        self.net = net
        self.crappifier = crappifier
        self.degrade_validation = degrade_validation
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.dice_weight = float(dice_weight)
        self.class_weights: torch.Tensor | None = (
            torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        )
        self.match_iou = float(match_iou)
        self.threshold = float(threshold)
        self.monitor = monitor
        self.val_seed = int(val_seed)
        self.n_panels = int(n_panels)
        self.panel_dir = Path(panel_dir) if panel_dir else None
        self.run_config = run_config or {}
        self.save_hyperparameters(ignore=list(self.not_hyperparameters), logger=False)
        self._train_generator: torch.Generator | None = None
        self._val_batches = 0
        self._confusion = torch.zeros(self.classes, self.classes, dtype=torch.long)
        self._val_loss = 0.0
        self._val_count = 0
        self._matching = Matching(0, 0, 0, 0.0)
        self._panels: list[np.ndarray] = []
        self.history: list[dict[str, float]] = []

    @property
    def scores_instances(self) -> bool:
        return self.boundary_class is not None

    # --- inputs and targets on the device ------------------------------------------------------
    def _generator(self, seed: int) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return gen

    def on_fit_start(self) -> None:
        base = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self._train_generator = self._generator(base + 7919 * self.global_rank)

    def degrade(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The crappifier on ``image (B, C, Y, X)``, resized back to ``(Y, X)`` (bilinear) when it shrinks."""
        assert self.crappifier is not None
        with torch.no_grad():
            low = self.crappifier(image.float(), generator)
        if tuple(low.shape[2:]) != tuple(image.shape[2:]):
            low = F.interpolate(low, size=tuple(image.shape[2:]), mode="bilinear", align_corners=False)
        return low

    def targets(self, label: torch.Tensor) -> torch.Tensor:
        """The class map the network learns: the labels, or three classes from instance ids."""
        return three_class_targets(label) if self.mode == "instance" else label.long()

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, Any]:
        image = batch["image"].float()
        training = self._trainer is not None and self.trainer.training
        if self.crappifier is not None and (training or self.degrade_validation):
            if training:
                if self._train_generator is None or self._train_generator.device != self.device:
                    self.on_fit_start()
                assert self._train_generator is not None
                image = self.degrade(image, self._train_generator)
            else:
                image = self.degrade(image, self._generator(self.val_seed * 100_003 + self._val_batches))
                self._val_batches += 1
        return {"image": image, "label": batch["label"], "target": self.targets(batch["label"])}

    # --- loss ----------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (binary for one output channel) + ``dice_weight`` × soft Dice of the foreground."""
        logits = logits.float()
        weights = self.class_weights.to(logits.device) if self.class_weights is not None else None
        if logits.shape[1] == 1:
            weight = None
            if weights is not None:
                weight = weights[target.long()][:, None]
            ce = F.binary_cross_entropy_with_logits(logits, target[:, None].float(), weight=weight)
        else:
            ce = F.cross_entropy(logits, target.long(), weight=weights)
        if not self.dice_weight:
            return ce
        probs = probabilities(logits, self.classes)
        return ce + self.dice_weight * soft_dice_loss(probs, target, range(1, self.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.net(batch["image"]), batch["target"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {self.global_step}")
        n = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        if self.trainer is not None and self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        return loss

    # --- validation ----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_batches = 0
        self._confusion = torch.zeros(self.classes, self.classes, dtype=torch.long)
        self._val_loss = 0.0
        self._val_count = 0
        self._matching = Matching(0, 0, 0, 0.0)
        self._panels = []

    def instances(self, probs: np.ndarray) -> np.ndarray:
        """Instances ``(Y, X)`` from one image's class probabilities ``(classes, Y, X)``."""
        if self.mode == "instance":
            return instances_from_three_class(probs, self.threshold)
        assert self.boundary_class is not None
        return instances_from_boundary(probs[self.boundary_class], self.threshold)

    def true_instances(self, label: np.ndarray) -> np.ndarray:
        """The true instances ``(Y, X)``: the instance ids, or the regions between true boundaries."""
        if self.mode == "instance":
            return label.astype(np.int32)
        assert self.boundary_class is not None
        return regions_of(label, self.boundary_class)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.net(batch["image"]).float()
        target = batch["target"]
        n = target.shape[0]
        self._val_loss += float(self.loss(logits, target)) * n
        self._val_count += n
        probs = probabilities(logits, self.classes)
        pred = probs.argmax(1)
        self._confusion += confusion_matrix(pred, target, self.classes).cpu()
        if self.scores_instances:
            probs_np = probs.detach().cpu().numpy()
            labels_np = batch["label"].cpu().numpy()
            for i in range(n):  # watershed is per image, on the CPU
                self._matching += match_instances(
                    self.instances(probs_np[i]), self.true_instances(labels_np[i]), self.match_iou
                )
        if len(self._panels) < self.n_panels and not self.trainer.sanity_checking:
            for i in range(min(n, self.n_panels - len(self._panels))):
                self._panels.append(panel_row(batch["image"][i], pred[i], target[i]))

    def epoch_metrics(self) -> dict[str, float]:
        """The validation epoch's metrics (see the module docstring), from the accumulated counts."""
        confusion = self._confusion
        if self.trainer is not None and self.trainer.world_size > 1:
            confusion = self.trainer.strategy.reduce(confusion.to(self.device), reduce_op="sum").cpu()
        iou, dice = iou_dice(confusion)
        metrics: dict[str, float] = {keys.VAL_LOSS: self._val_loss / max(1, self._val_count)}
        for c, name in enumerate(self.class_names):
            metrics[f"{keys.VAL_IOU}/{name}"] = float(iou[c])
            metrics[f"{keys.VAL_DICE}/{name}"] = float(dice[c])
        fg_iou = iou[1:][torch.isfinite(iou[1:])]
        fg_dice = dice[1:][torch.isfinite(dice[1:])]
        metrics[keys.VAL_IOU] = float(fg_iou.mean()) if fg_iou.numel() else 0.0
        metrics[keys.VAL_DICE] = float(fg_dice.mean()) if fg_dice.numel() else 0.0
        metrics[keys.metric_key(keys.VAL, keys.PIXEL_ACCURACY)] = float(
            confusion.diagonal().sum() / confusion.sum().clamp_min(1)
        )
        if self.scores_instances:
            for key, value in self._matching.scores().items():
                metrics[keys.metric_key(keys.VAL, key)] = value if math.isfinite(value) else 0.0
        return metrics

    def on_validation_epoch_end(self) -> None:
        if not self._val_count:
            return
        metrics = self.epoch_metrics()
        self.log_dict(metrics, prog_bar=False)
        self.log(f"{keys.VAL_IOU}_fg", metrics[keys.VAL_IOU], prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self.history.append({"epoch": self.current_epoch, "step": self.global_step, **metrics})
        self._write_panels()

    def _write_panels(self) -> None:
        if not self._panels:
            return
        rows = [
            r for r in self._panels if r.shape[1] == self._panels[0].shape[1]
        ]  # images may differ in size
        image = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
        caption = "input | prediction | labels"
        if self.panel_dir is not None and self.global_rank == 0:
            from skimage.io import imsave

            self.panel_dir.mkdir(parents=True, exist_ok=True)
            imsave(self.panel_dir / f"val_epoch{self.current_epoch:03d}.png", image, check_contrast=False)
        for logger in self.loggers:
            log_image = getattr(logger, "log_image", None)
            if callable(log_image):
                log_image(key="val/panels", images=[image], caption=[caption], step=self.global_step)

    # --- optimisation and checkpoints ----------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        steps = float(self.trainer.estimated_stepping_batches) if self.trainer is not None else 1.0
        total = max(1, int(steps)) if math.isfinite(steps) else 1
        accepts = inspect.signature(self.scheduler_factory).parameters
        scheduler = self.scheduler_factory(
            optimizer=optimizer, **({"T_max": total} if "T_max" in accepts else {})
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["psr_config"] = self.run_config
        checkpoint["psr_generator"] = "net"
        checkpoint["psr_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("psr_history", []))


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A grey image ``(Y, X)`` in [0, 1] with ``classes (Y, X)`` (> 0) drawn over it: ``(Y, X, 3)``."""
    rgb = np.repeat(image[..., None], 3, axis=-1)
    for c in np.unique(classes):
        if c == 0:
            continue
        mask = classes == c
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * PALETTE[(int(c) - 1) % len(PALETTE)]
    return rgb


def panel_row(image: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """One panel row ``(Y, 3·X, 3)`` in [0, 1]: the input's first channel (its 1–99 % range), the
    prediction over it, the labels over it."""
    grey = image[0].detach().float().cpu().numpy()
    lo, hi = np.percentile(grey, [1, 99])
    grey = np.clip((grey - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    p, t = pred.detach().cpu().numpy(), target.detach().cpu().numpy()
    return np.concatenate([np.repeat(grey[..., None], 3, -1), overlay(grey, p), overlay(grey, t)], axis=1)
