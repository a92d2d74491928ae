"""The segmentation task: a composed ``conf/segment.yaml`` in, a trained segmentation model, its checkpoints
and ``summary.json`` out (``python segment.py experiment=sstem_membranes``).

It reuses the restoration platform's groups (``model``, ``crappifier``, ``trainer``, ``logger``,
``callbacks``, ``paths``, ``hydra``) and its hardware settings (``psr.tasks.train``). The generator configs
of ``conf/model`` become segmentation networks here: the task sets ``model.scale=1``, ``model.residual=false``,
``model.in_channels`` to the data's channels and ``model.out_channels`` to what the classes need
(``psr.modules.segmentation.output_channels``), so the stored config rebuilds the same network.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class
from omegaconf import DictConfig, open_dict

from psr.data.pairs import PairError
from psr.metrics import keys
from psr.tasks.checkpointing import RandomState, SaveOnInterrupt
from psr.tasks.common import check_blank_patch
from psr.tasks.common import choice as _choice
from psr.tasks.common import instantiate_node as _instantiate
from psr.tasks.common import quiet_duplicate_logs as _quiet_duplicate_logs
from psr.tasks.common import write_json as _write_json
from psr.tasks.errors import ConfigError
from psr.tasks.hardware import loader_settings, set_threads
from psr.tasks.loggers import build_loggers, finish_wandb, to_plain, wandb_run_info
from psr.tasks.resumable import check_fits, check_resume, interruptible, trainer_extras
from psr.tasks.run_summary import EpochLossHistory, trainer_fields

log = logging.getLogger(__name__)


def configure_model(cfg: DictConfig, in_channels: int) -> None:
    """Turn ``cfg.model`` (a restoration generator config) into a segmentation network's config in place.

    Raises ``ConfigError`` for a model without ``out_channels`` or with a scale the data cannot follow.
    """
    from psr.modules.segmentation import output_channels

    mode = str(cfg.module.get("mode", "semantic"))
    classes = int(cfg.module.get("classes", 2))
    try:
        accepts = inspect.signature(get_class(str(cfg.model._target_))).parameters
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"model: cannot import {cfg.model.get('_target_')}: {err}") from err
    if "out_channels" not in accepts:
        raise ConfigError(
            f"model={_choice(cfg, 'model')} has no out_channels; segmentation needs a model with one output"
            " channel per class, e.g. model=unet or model=care_unet"
        )
    settings: dict[str, Any] = {"out_channels": output_channels(mode, classes), "in_channels": in_channels}
    settings.update({key: value for key, value in (("scale", 1), ("residual", False)) if key in accepts})
    if int(cfg.model.get("dims", 2)) != 2:
        raise ConfigError(f"model.dims={cfg.model.dims}: segmentation trains 2D models only (model.dims=2)")
    with open_dict(cfg.model):
        for key, value in settings.items():
            cfg.model[key] = value


def build(cfg: DictConfig) -> dict[str, Any]:
    """Read and check the labelled data, then build the network, the crappifier (if any) and the module.

    Raises ``ConfigError`` (one sentence) for bad labels or an inconsistent config, before any training.
    """
    from psr.data.labelled import LabelError

    mode, classes = str(cfg.module.get("mode", "semantic")), int(cfg.module.get("classes", 2))
    if str(cfg.data.get("mode", mode)) != mode or (
        mode == "semantic" and int(cfg.data.get("classes")) != classes
    ):
        raise ConfigError(
            f"data (mode {cfg.data.get('mode')}, classes {cfg.data.get('classes')}) and module (mode {mode},"
            f" classes {classes}) disagree; set mode and classes once at the top level"
        )
    datamodule = _instantiate(cfg.data, "data", **loader_settings(cfg))
    try:
        datamodule.setup("fit")
    except (LabelError, PairError, FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data: {err}") from err
    if not datamodule.val_items:
        raise ConfigError("data: no validation image; hold some out with data.val_fraction")
    configure_model(cfg, datamodule.in_channels)
    net = _instantiate(cfg.model, "model")
    crappifier = _instantiate(cfg.crappifier, "crappifier") if cfg.get("crappifier") else None
    if crappifier is not None:
        patch = int(cfg.data.patch_size)
        what = f"crappifier={_choice(cfg, 'crappifier')}"
        check_blank_patch(crappifier, what, (patch, patch), datamodule.in_channels, int(cfg.get("scale", 1)))
    return {"datamodule": datamodule, "net": net, "crappifier": crappifier}


def segment(cfg: DictConfig) -> dict[str, Any]:
    """Train a segmentation model as ``cfg`` says; return the run summary (also ``summary.json``).

    As training does (``psr.tasks.resumable``): checkpoints are written atomically, Ctrl-C or SIGTERM
    saves a ``last.ckpt`` that ``ckpt_path=`` resumes, and a checkpoint of another model, module or
    channel count is refused in one sentence before Lightning reads it.
    """
    started = time.time()
    _quiet_duplicate_logs()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; expected a checkpoint file to resume from")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    set_threads(cfg)
    parts = build(cfg)
    run_config = to_plain(cfg)
    resume = check_resume(str(ckpt_path), run_config) if ckpt_path else None
    module = _instantiate(
        cfg.module,
        "module",
        net=parts["net"],
        crappifier=parts["crappifier"],
        panel_dir=str(output_dir / "panels"),
    )
    module.run_config = run_config
    if resume is not None:
        check_fits(resume, str(ckpt_path), run_config, module)
        resume = None  # Lightning reads the file again
    failed = True
    try:
        loggers = build_loggers(cfg.get("logger"), output_dir, run_config)
        losses, interrupt = EpochLossHistory(), SaveOnInterrupt()
        callbacks = [
            _instantiate(node, f"callbacks.{key}")
            for key, node in (cfg.get("callbacks") or {}).items()
            if node and "_target_" in node
        ]
        trainer: L.Trainer = _instantiate(
            cfg.trainer,
            "trainer",
            logger=loggers or False,
            callbacks=[*callbacks, losses, interrupt, RandomState()],
            **trainer_extras(cfg),
        )
        with interruptible(interrupt):
            trainer.fit(
                module, datamodule=parts["datamodule"], ckpt_path=str(ckpt_path) if ckpt_path else None
            )
        summary = summarise(cfg, module, trainer, time.time() - started, losses.means)
        summary["val_images"] = parts["datamodule"].val_names
        summary["wandb"] = wandb_run_info(loggers)
        if trainer.is_global_zero:
            _write_json(output_dir / "summary.json", summary)
            print(result_line(summary), flush=True)
            print(
                f"psr: run folder {output_dir.absolute()} (summary.json, checkpoints/, train.log)", flush=True
            )
        failed = False
        return summary
    finally:
        finish_wandb(failed)


def summarise(
    cfg: DictConfig, module: Any, trainer: L.Trainer, wall_time: float, train_losses: dict[int, float]
) -> dict[str, Any]:
    """The best validation epoch by ``module.monitor``, the history, and where the checkpoints are."""
    monitor = str(cfg.module.get("monitor", keys.SEGMENTATION_MONITOR))
    history = [
        {**h, **({"train/loss": train_losses[int(h["epoch"])]} if int(h["epoch"]) in train_losses else {})}
        for h in module.history
    ]
    best = max(module.history, key=lambda h: h.get(monitor, float("-inf"))) if module.history else {}
    return {
        "task": "segment",
        "model": _choice(cfg, "model"),
        "crappifier": _choice(cfg, "crappifier") if cfg.get("crappifier") else None,
        "data": _choice(cfg, "data"),
        "mode": module.mode,
        "classes": module.class_names,
        "seed": int(cfg.seed),
        "monitor": monitor,
        "best": best,
        **trainer_fields(trainer, monitor, wall_time),
        "history": history,
    }


def result_line(summary: dict[str, Any]) -> str:
    """One line a user reads at the end of a run."""
    best = summary.get("best") or {}
    if not best:
        return f"psr segment: no validation ran ({summary['steps']} steps, {summary['wall_time_s']:.0f} s)"
    text = f"psr segment: val IoU {best[keys.VAL_IOU]:.3f}, Dice {best[keys.VAL_DICE]:.3f}"
    if keys.VAL_F1 in best:
        text += f", instance F1@0.5 {best[keys.VAL_F1]:.3f} (AP {best[keys.VAL_AP]:.3f})"
    ckpt = summary.get("best_checkpoint") or summary.get("last_checkpoint") or "not saved"
    return f"{text}; {summary['steps']} steps in {summary['wall_time_s']:.0f} s; checkpoint {ckpt}"
