"""The training task: a composed config in, a trained model, its checkpoints and ``summary.json`` out."""

from __future__ import annotations

import inspect
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from psr.tasks.errors import ConfigError
from psr.tasks.loggers import build_loggers, finish_wandb, to_plain


def _quiet_duplicate_logs() -> None:
    """Lightning adds its own console handler; under Hydra the root handlers already print (and file) it."""
    root = logging.getLogger()
    if root.handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdverts())


class _DropAdverts(logging.Filter):
    """Drop Lightning's product tips from the run log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def _choice(cfg: DictConfig, group: str) -> str:
    """The command-line choice of a config group (e.g. ``rcan``), when Hydra recorded it."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get(group, group))
    except (ValueError, AttributeError):
        return str(cfg.get(group, {}).get("_target_", group)).rsplit(".", 1)[-1]


def _instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures become one ``ConfigError`` naming the config key."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{key}: {cause}") from err
    except MissingMandatoryValue as err:
        raise ConfigError(
            f"{err.full_key or key} has no value; set it on the command line ({err.full_key}=...)"
        ) from err


def build(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate and cross-check everything a run needs, reading the data but training nothing.

    Raises ``ConfigError`` (one sentence) for an inconsistent config or bad data.
    """
    scale = int(cfg.scale)
    crappifier = _instantiate(cfg.crappifier, "crappifier")
    net = _instantiate(cfg.model, "model")
    net_scale = int(getattr(net, "scale", 1))
    crap_scale = int(getattr(crappifier, "scale", 1))
    if net_scale != crap_scale:
        raise ConfigError(
            f"model.scale={net_scale} but crappifier={_choice(cfg, 'crappifier')} downsamples by {crap_scale}: "
            f"the model must upsample by what the crappifier removes (set scale=... once at the top level)"
        )
    patch = cfg.data.get("patch_size")
    patch_sizes = [int(patch)] if isinstance(patch, int) else [int(p) for p in (patch or [])]
    bad = [p for p in patch_sizes[-2:] if p % crap_scale]
    if bad:
        raise ConfigError(
            f"data.patch_size={OmegaConf.to_object(patch) if not isinstance(patch, int) else patch} is not divisible "
            f"by the scale {crap_scale}: pick a patch size that is a multiple of {crap_scale}"
        )
    if scale != crap_scale:
        raise ConfigError(
            f"scale={scale} but crappifier={_choice(cfg, 'crappifier')} downsamples by {crap_scale}: "
            "interpolate ${scale} in the crappifier config instead of a fixed factor"
        )
    _dry_run(crappifier, net, cfg, patch_sizes, crap_scale)
    datamodule = _instantiate(cfg.data, "data")
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data: {err}") from err
    in_channels = getattr(net, "in_channels", None)
    if in_channels is not None and datamodule.in_channels != in_channels:
        raise ConfigError(
            f"the data has {datamodule.in_channels} channel(s) but model.in_channels={in_channels}: "
            "set model.in_channels (and model.out_channels) to match, or pick data.channels"
        )
    loss = _instantiate(cfg.loss, "loss")
    resolve = getattr(loss, "resolve_weights", None)  # losses with pretrained weights (perceptual)
    if callable(resolve):
        try:
            resolve()
        except FileNotFoundError as err:
            raise ConfigError(f"loss={_choice(cfg, 'loss')}: {err}") from err
    return {"crappifier": crappifier, "net": net, "datamodule": datamodule, "loss": loss}


def _dry_run(crappifier: Any, net: Any, cfg: DictConfig, patch_sizes: list[int], scale: int) -> None:
    """Degrade one blank patch before any data is read: a kernel larger than the patch, or a pipeline
    whose output is not the patch divided by the scale, fails here in one sentence."""
    if not patch_sizes:
        return
    channels = int(getattr(net, "in_channels", 1))
    shape = (1, channels, *(patch_sizes * 2 if len(patch_sizes) == 1 else patch_sizes))
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():
            out = crappifier(torch.full(shape, 0.5), generator)
    except ValueError as err:
        raise ConfigError(
            f"crappifier={_choice(cfg, 'crappifier')} on a {list(shape[2:])} patch: {err}"
        ) from err
    expected = (*shape[:-2], shape[-2] // scale, shape[-1] // scale)
    if tuple(out.shape) != expected:
        raise ConfigError(
            f"crappifier={_choice(cfg, 'crappifier')} turns a patch of shape {list(shape)} into {list(out.shape)};"
            f" expected {list(expected)} (the patch divided by the scale {scale})"
        )


def _adversarial_parts(cfg: DictConfig) -> dict[str, Any]:
    """The discriminator and GAN loss, for modules whose constructor takes them (``module=gan``)."""
    from hydra.utils import get_class

    accepts = inspect.signature(get_class(str(cfg.module._target_))).parameters
    if "discriminator" not in accepts:
        return {}
    if not cfg.get("discriminator"):
        raise ConfigError(
            f"module={_choice(cfg, 'module')} needs a discriminator: add discriminator=patchgan, unet_sn or vgg_style"
        )
    parts: dict[str, Any] = {"discriminator": _instantiate(cfg.discriminator, "discriminator")}
    if "gan_loss" in accepts:
        parts["gan_loss"] = _instantiate(cfg.gan_loss, "gan_loss")
    return parts


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as ``cfg`` says; return the run summary (also written to ``summary.json``)."""
    started = time.time()
    _quiet_duplicate_logs()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; expected a checkpoint file to resume from")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    parts = build(cfg)
    run_config = to_plain(cfg)
    module = _instantiate(
        cfg.module,
        "module",
        net=parts["net"],
        crappifier=parts["crappifier"],
        loss=parts["loss"],
        panel_dir=str(output_dir / "panels"),
        **_adversarial_parts(cfg),
    )
    # Set after construction: passed through instantiate, the config's own _target_ nodes would be built.
    module.run_config = run_config
    failed = True
    try:
        loggers = build_loggers(cfg.get("logger"), output_dir, run_config)
        callbacks = [
            instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node and "_target_" in node
        ]
        trainer: L.Trainer = _instantiate(
            cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks
        )
        trainer.fit(module, datamodule=parts["datamodule"], ckpt_path=str(ckpt_path) if ckpt_path else None)
        summary = summarise(cfg, module, trainer, time.time() - started)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(gain_line(summary), flush=True)
        failed = False
        return summary
    finally:
        finish_wandb(failed)


def summarise(cfg: DictConfig, module: Any, trainer: L.Trainer, wall_time: float) -> dict[str, Any]:
    """The run's figures: the best validation epoch by the monitored metric, with its baseline."""
    monitor = str(cfg.module.get("monitor", "val/psnr"))
    history: list[dict[str, float]] = list(module.history)
    best = max(history, key=lambda h: h.get(monitor, float("-inf"))) if history else {}
    checkpoints = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    best_cb = next((cb for cb in checkpoints if cb.monitor == monitor), None)
    last_cb = next((cb for cb in checkpoints if cb.monitor is None), None)
    return {
        "model": _choice(cfg, "model"),
        "crappifier": _choice(cfg, "crappifier"),
        "data": _choice(cfg, "data"),
        "scale": int(cfg.scale),
        "seed": int(cfg.seed),
        "monitor": monitor,
        "best": best,
        "gain_db": (best["val/psnr"] - best["val/baseline_psnr"]) if best else None,
        "baseline": str(cfg.module.get("baseline_mode", "bilinear")),
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "wall_time_s": round(wall_time, 1),
        "best_checkpoint": (best_cb.best_model_path or None) if best_cb else None,
        # With no monitor, a checkpoint callback's "best" is simply the latest save.
        "last_checkpoint": (last_cb.best_model_path or None) if last_cb else None,
        "device": str(trainer.strategy.root_device),
        "torch": torch.__version__,
    }


def gain_line(summary: dict[str, Any]) -> str:
    """One line a user reads at the end of a run: the model against the interpolation baseline."""
    best = summary.get("best") or {}
    if not best:
        return f"psr: no validation ran ({summary['steps']} steps, {summary['wall_time_s']:.0f} s)"
    ckpt = summary.get("best_checkpoint") or summary.get("last_checkpoint") or "not saved"
    return (
        f"psr: val PSNR {best['val/psnr']:.2f} dB vs {summary['baseline']} baseline {best['val/baseline_psnr']:.2f} dB"
        f" ({summary['gain_db']:+.2f} dB), SSIM {best['val/ssim']:.3f} vs {best['val/baseline_ssim']:.3f};"
        f" {summary['steps']} steps in {summary['wall_time_s']:.0f} s; checkpoint {ckpt}"
    )
