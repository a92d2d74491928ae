"""The training task: a composed config in, a trained model, its checkpoints and ``summary.json`` out."""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf

from psr.models.protocol import check_generator
from psr.tasks import crosseval
from psr.tasks.checkpointing import RandomState, SaveOnInterrupt
from psr.tasks.common import (
    check_blank_patch,
    choice,
    instantiate_node,
    patch_shape,
    quiet_duplicate_logs,
    write_json,
)
from psr.tasks.errors import ConfigError
from psr.tasks.hardware import (  # noqa: F401 - also this module's public names (scripts import them here)
    LOADER_KEYS,
    cpu_count,
    loader_settings,
    physical_cores,
    set_threads,
    uses_cuda,
)
from psr.tasks.image_metadata import RecordImageMetadata
from psr.tasks.loggers import build_loggers, finish_wandb, to_plain, wandb_run_info
from psr.tasks.multirun import ddp_children_run_this_job, sweep_info, sweep_job
from psr.tasks.progress import ModelLine
from psr.tasks.resumable import check_fits, check_resume, interruptible, trainer_extras
from psr.tasks.run_summary import EpochLossHistory, gain_line, summarise

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate and cross-check everything a run needs, reading the data but training nothing.

    Raises ``ConfigError`` (one sentence) for an inconsistent config or bad data.
    """
    scale = int(cfg.scale)
    crappifier = instantiate_node(cfg.crappifier, "crappifier")
    net = check_generator(instantiate_node(cfg.model, "model"), f"model={choice(cfg, 'model')}")
    net_scale = net.scale
    crap_scale = int(getattr(crappifier, "scale", 1))
    if net_scale != crap_scale:
        raise ConfigError(
            f"model.scale={net_scale} but crappifier={choice(cfg, 'crappifier')} downsamples by {crap_scale}: "
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
            f"scale={scale} but crappifier={choice(cfg, 'crappifier')} downsamples by {crap_scale}: "
            "interpolate ${scale} in the crappifier config instead of a fixed factor"
        )
    channels = net.in_channels
    check_blank_patch(
        crappifier, f"crappifier={choice(cfg, 'crappifier')}", patch_shape(patch_sizes), channels, crap_scale
    )
    cross_eval = crosseval.settings(cfg)
    if sweep_job()[0] is not None:
        crosseval.check_ablation(cfg, {g: choice(cfg, g) for g in ("model", "crappifier")})
    test_crappifiers = crosseval.build_test_crappifiers(
        cross_eval.crappifiers,
        crap_scale,
        choice(cfg, "crappifier"),
        crappifier,
        patch_shape(patch_sizes),
        channels,
    )
    crosseval.check_real_pairs(cross_eval.real_pairs)
    datamodule = instantiate_node(cfg.data, "data", **loader_settings(cfg))
    try:
        datamodule.prepare_data()
        _check_pixel_types(datamodule)
        datamodule.setup("fit")
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data: {err}") from err
    if test_crappifiers and not getattr(datamodule, "clean_validation", True):
        raise ConfigError(
            f"cross_eval.crappifiers={list(test_crappifiers)} degrades clean validation patches, but data="
            f"{choice(cfg, 'data')} has none (real pairs, or data.val_fraction=0); set cross_eval.crappifiers=[]"
        )
    if datamodule.in_channels != net.in_channels:
        raise ConfigError(
            f"the data has {datamodule.in_channels} channel(s) but model.in_channels={net.in_channels}: "
            "set model.in_channels (and model.out_channels) to match, or pick data.channels"
        )
    data_dims = int(getattr(datamodule, "spatial_dims", 2))
    if data_dims != net.spatial_dims:
        raise ConfigError(
            f"model={choice(cfg, 'model')} takes {net.spatial_dims}D inputs but data={choice(cfg, 'data')} gives"
            f" {data_dims}D patches (data.spatial_dims={data_dims}); leave data.spatial_dims to follow the model"
            " (model.dims), or pick a model of the data's dimensionality"
        )
    loss = instantiate_node(cfg.loss, "loss")
    resolve = getattr(loss, "resolve_weights", None)  # losses with pretrained weights (perceptual)
    if callable(resolve):
        try:
            resolve()
        except FileNotFoundError as err:
            raise ConfigError(f"loss={choice(cfg, 'loss')}: {err}") from err
    return {
        "crappifier": crappifier,
        "net": net,
        "datamodule": datamodule,
        "loss": loss,
        "test_crappifiers": test_crappifiers,
        "cross_eval": cross_eval,
    }


def _check_pixel_types(datamodule: Any) -> None:
    """Refuse images whose pixels are not intensities (bool masks, complex values) before any is read."""
    path = getattr(datamodule, "path", None)
    if not path:
        return
    from psr.io.omezarr import discover_images

    for ref in discover_images(path, getattr(datamodule, "storage_options", None)):
        kind = np.dtype(ref.dtype).kind
        if kind in "bc":
            raise ConfigError(
                f"data: image {ref.name} has {ref.dtype} pixels; expected intensities (unsigned or signed"
                " integers such as uint8/uint16, or float32)"
            )


def _adversarial_parts(cfg: DictConfig) -> dict[str, Any]:
    """The discriminator and GAN loss, for modules whose constructor takes them (``module=gan``)."""
    from hydra.utils import get_class

    accepts = inspect.signature(get_class(str(cfg.module._target_))).parameters
    if "discriminator" not in accepts:
        return {}
    if not cfg.get("discriminator"):
        raise ConfigError(
            f"module={choice(cfg, 'module')} needs a discriminator: add discriminator=patchgan, unet_sn or vgg_style"
        )
    parts: dict[str, Any] = {"discriminator": instantiate_node(cfg.discriminator, "discriminator")}
    if "gan_loss" in accepts:
        parts["gan_loss"] = instantiate_node(cfg.gan_loss, "gan_loss")
    return parts


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as ``cfg`` says; return the run summary (also written to ``summary.json``).

    After training, the best (else last) generator is scored on ``cross_eval.crappifiers`` and
    ``cross_eval.real_pairs`` (:mod:`psr.tasks.crosseval`). Under DDP every rank trains; only global
    rank 0 evaluates and writes ``summary.json`` (Lightning writes checkpoints from rank 0 only).
    """
    started = time.time()
    quiet_duplicate_logs()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; expected a checkpoint file to resume from")
    run_config = to_plain(cfg)
    resume = check_resume(str(ckpt_path), run_config) if ckpt_path else None
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    set_threads(cfg)
    parts = build(cfg)
    module = instantiate_node(
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
    if resume is not None:
        check_fits(resume, str(ckpt_path), run_config, module)
        resume = None  # Lightning reads the file again; do not hold its optimiser state twice
    sweep = sweep_info(cfg)
    failed = True
    try:
        loggers = build_loggers(cfg.get("logger"), output_dir, run_config, group=sweep["group"])
        losses = EpochLossHistory()
        interrupt = SaveOnInterrupt()
        callbacks = [
            instantiate_node(node, f"callbacks.{key}")
            for key, node in (cfg.get("callbacks") or {}).items()
            if node and "_target_" in node
        ]
        callbacks += [losses, interrupt, RandomState(), RecordImageMetadata()]
        if cfg.trainer.get("enable_model_summary", True):
            callbacks.append(ModelLine())
        trainer: L.Trainer = instantiate_node(
            cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks, **trainer_extras(cfg)
        )
        with ddp_children_run_this_job(trainer), interruptible(interrupt):
            trainer.fit(
                module, datamodule=parts["datamodule"], ckpt_path=str(ckpt_path) if ckpt_path else None
            )
        summary = summarise(cfg, module, trainer, time.time() - started, train_losses=losses.means)
        summary["crappifier_config"] = to_plain(cfg.crappifier)
        summary["sweep"] = sweep
        has_test = getattr(parts["datamodule"], "has_test_pairs", None)
        if callable(has_test) and has_test():
            # Real test pairs (data=pairs data.test_pairs): the best checkpoint scored once, after training.
            best_ckpt = summary.get("best_checkpoint") or summary.get("last_checkpoint")
            trainer.test(module, datamodule=parts["datamodule"], ckpt_path=best_ckpt, verbose=False)
            summary["test"] = dict(module.test_results)
        if trainer.is_global_zero:
            summary.update(
                crosseval.evaluate_after_training(cfg, parts, module, trainer, summary, output_dir)
            )
            crosseval.log_evaluations(trainer, summary)
            summary["wandb"] = wandb_run_info(loggers)
            summary["wall_time_s"] = round(time.time() - started, 1)
            write_json(output_dir / "summary.json", summary)
            print(gain_line(summary), flush=True)
            print(
                f"psr: run folder {output_dir.absolute()} (summary.json, checkpoints/, train.log)", flush=True
            )
        failed = False
        return summary
    finally:
        finish_wandb(failed)
