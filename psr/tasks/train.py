"""The training task: a composed config in, a trained model, its checkpoints and ``summary.json`` out."""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import MissingMandatoryValue

from psr.atomic import write_atomic
from psr.faults import Terminated, default_sigterm
from psr.tasks import crosseval
from psr.tasks.checkpointing import AtomicCheckpointIO, RandomState, SaveOnInterrupt
from psr.tasks.errors import ConfigError
from psr.tasks.loggers import build_loggers, finish_wandb, to_plain, wandb_run_info
from psr.tasks.progress import ModelLine

log = logging.getLogger(__name__)


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
    """Drop Lightning's product tips, and its note that psr's one-line model summary replaces its own,
    from the run log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Tip:" not in message and "Skipping setting a default `ModelSummary`" not in message


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
    test_names, real_pairs, _ = crosseval.settings(cfg)
    if _sweep()[0] is not None:
        crosseval.check_ablation(cfg, {g: _choice(cfg, g) for g in ("model", "crappifier")})
    test_crappifiers = crosseval.build_test_crappifiers(
        test_names,
        crap_scale,
        _choice(cfg, "crappifier"),
        crappifier,
        _patch_shape(patch_sizes),
        int(getattr(net, "in_channels", 1)),
    )
    crosseval.check_real_pairs(real_pairs)
    datamodule = _instantiate(cfg.data, "data", **loader_settings(cfg))
    try:
        datamodule.prepare_data()
        _check_pixel_types(datamodule)
        datamodule.setup("fit")
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data: {err}") from err
    if test_crappifiers and not getattr(datamodule, "clean_validation", True):
        raise ConfigError(
            f"cross_eval.crappifiers={list(test_crappifiers)} degrades clean validation patches, but data="
            f"{_choice(cfg, 'data')} has none (real pairs, or data.val_fraction=0); set cross_eval.crappifiers=[]"
        )
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
    return {
        "crappifier": crappifier,
        "net": net,
        "datamodule": datamodule,
        "loss": loss,
        "test_crappifiers": test_crappifiers,
    }


def _check_pixel_types(datamodule: Any) -> None:
    """Refuse images whose pixels are not intensities (bool masks, complex values) before any is read."""
    path = getattr(datamodule, "path", None)
    if not path:
        return
    from psr.data.omezarr import discover_images

    for ref in discover_images(path, getattr(datamodule, "storage_options", None)):
        kind = np.dtype(ref.dtype).kind
        if kind in "bc":
            raise ConfigError(
                f"data: image {ref.name} has {ref.dtype} pixels; expected intensities (unsigned or signed"
                " integers such as uint8/uint16, or float32)"
            )


# --- hardware: loader settings and threads -------------------------------------------------------

LOADER_KEYS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")
MAX_GPU_WORKERS = 8  # per GPU process; more did not feed rcan ×4 faster on a 16-core H200 machine


def cpu_count() -> int:
    """The logical CPUs this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads not counted), at most ``cpu_count()``."""
    cores: int | None = None
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        try:
            ids: set[tuple[str, str]] = set()
            package = ""
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = (s.strip() for s in line.partition(":"))
                if key == "physical id":
                    package = value
                elif key == "core id":
                    ids.add((package, value))
            cores = len(ids) or None
        except OSError:
            cores = None
    return max(1, min(cores or cpu_count(), cpu_count()))


def uses_cuda(cfg: DictConfig) -> bool:
    """Whether the trainer will run on CUDA: ``trainer.accelerator`` gpu/cuda, or auto with a GPU."""
    accelerator = str(cfg.trainer.get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def processes_per_node(cfg: DictConfig) -> int:
    """Training processes on this machine: ``trainer.devices`` (a count, a list, or auto / -1)."""
    devices = cfg.trainer.get("devices", 1)
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, str) and devices.isdigit() and int(devices) > 0:
        return int(devices)
    if OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        return max(1, len(devices))
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    return max(1, torch.cuda.device_count()) if uses_cuda(cfg) else 1


def loader_settings(cfg: DictConfig) -> dict[str, Any]:
    """Values for the loader settings the data config leaves null (``data.num_workers`` etc.), picked
    from the machine; keys the config sets, or does not have, are left alone. Logs what it picked.

    CUDA: ``min(8, CPUs per process − 1)`` workers, pinned memory, persistent workers, prefetch_factor 4
    (a GPU step takes milliseconds: one or two workers leave it waiting for data most of the time).
    CPU: one worker when there are two CPUs per process or more (the training step needs the rest).
    """
    data = cfg.get("data") or {}
    unset = [key for key in LOADER_KEYS if key in data and data.get(key) is None]
    if not unset:
        return {}
    cpus, procs = cpu_count(), processes_per_node(cfg)
    per_process = max(1, cpus // procs)
    cuda = uses_cuda(cfg)
    if "num_workers" not in unset:
        workers = int(data.get("num_workers") or 0)
    elif cuda:
        workers = max(0, min(MAX_GPU_WORKERS, per_process - 1))
    else:
        workers = 1 if per_process >= 2 else 0
    picks = {
        "num_workers": workers,
        "pin_memory": cuda,
        "persistent_workers": workers > 0,
        "prefetch_factor": 4 if cuda and workers else None,
    }
    chosen = {key: picks[key] for key in unset}
    log.info(
        "data loader: %s (picked for %s: %d CPUs, %d training process(es); set data.<key> to override)",
        ", ".join(f"{k}={v}" for k, v in chosen.items()),
        "CUDA" if cuda else "the CPU",
        cpus,
        procs,
    )
    return chosen


def set_threads(cfg: DictConfig) -> int | None:
    """Set torch's intra-op threads when the config has ``trainer_threads`` (``trainer=cpu`` does): its
    value, or with null the physical cores divided among this machine's training processes. Returns the
    number set, or ``None`` when the config leaves torch's default alone."""
    if "trainer_threads" not in cfg:
        return None
    value = cfg.get("trainer_threads")
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ConfigError(f"trainer_threads={value!r}: expected a positive number of threads, or null")
    threads = int(value) if value is not None else max(1, physical_cores() // processes_per_node(cfg))
    torch.set_num_threads(threads)
    log.info(
        "torch threads: %d (%s)",
        threads,
        "trainer_threads"
        if value is not None
        else f"{physical_cores()} physical core(s); set trainer_threads=N",
    )
    return threads


def _patch_shape(patch_sizes: list[int]) -> list[int]:
    """The spatial shape of one patch: a single size is a square (2D) patch."""
    return patch_sizes * 2 if len(patch_sizes) == 1 else patch_sizes


def _dry_run(crappifier: Any, net: Any, cfg: DictConfig, patch_sizes: list[int], scale: int) -> None:
    """Degrade one blank patch before any data is read: a kernel larger than the patch, or a pipeline
    whose output is not the patch divided by the scale, fails here in one sentence."""
    if not patch_sizes:
        return
    channels = int(getattr(net, "in_channels", 1))
    shape = (1, channels, *_patch_shape(patch_sizes))
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
    """Train one model as ``cfg`` says; return the run summary (also written to ``summary.json``).

    After training, the best (else last) generator is scored on ``cross_eval.crappifiers`` and
    ``cross_eval.real_pairs`` (:mod:`psr.tasks.crosseval`). Under DDP every rank trains; only global
    rank 0 evaluates and writes ``summary.json`` (Lightning writes checkpoints from rank 0 only).
    """
    started = time.time()
    _quiet_duplicate_logs()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; expected a checkpoint file to resume from")
    run_config = to_plain(cfg)
    resume = _check_resume(str(ckpt_path), run_config) if ckpt_path else None
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    set_threads(cfg)
    parts = build(cfg)
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
    if resume is not None:
        _check_fits(resume, str(ckpt_path), run_config, module)
        resume = None  # Lightning reads the file again; do not hold its optimiser state twice
    sweep = sweep_info(cfg)
    failed = True
    try:
        loggers = build_loggers(cfg.get("logger"), output_dir, run_config, group=sweep["group"])
        losses = EpochLossHistory()
        interrupt = SaveOnInterrupt()
        callbacks = [
            _instantiate(node, f"callbacks.{key}")
            for key, node in (cfg.get("callbacks") or {}).items()
            if node and "_target_" in node
        ]
        callbacks += [losses, interrupt, RandomState()]
        if cfg.trainer.get("enable_model_summary", True):
            callbacks.append(ModelLine())
        # Atomic checkpoints, unless the trainer config brings its own plugins (then those decide).
        extra: dict[str, Any] = {} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}
        if "enable_progress_bar" not in cfg.trainer:
            extra["enable_progress_bar"] = sys.stdout.isatty()  # in a file, the bar is noise; see ProgressLog
        trainer: L.Trainer = _instantiate(
            cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks, **extra
        )
        with _ddp_children_run_this_job(trainer), _interruptible(interrupt):
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
            summary.update(_evaluate_after_training(cfg, parts, module, trainer, summary, output_dir))
            _log_evaluations(trainer, summary)
            summary["wandb"] = wandb_run_info(loggers)
            summary["wall_time_s"] = round(time.time() - started, 1)
            _write_json(output_dir / "summary.json", summary)
            print(gain_line(summary), flush=True)
            print(
                f"psr: run folder {output_dir.absolute()} (summary.json, checkpoints/, train.log)", flush=True
            )
        failed = False
        return summary
    finally:
        finish_wandb(failed)


def _check_resume(ckpt_path: str, run_config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint to resume from is a psr training checkpoint of this run's model, scale and
    channels (one sentence naming what differs, else); read before any data is."""
    from psr.inference.checkpoint import CheckpointError, check_resumable

    try:
        return check_resumable(ckpt_path, run_config)
    except CheckpointError as err:
        raise ConfigError(str(err)) from err


def _check_fits(ckpt: dict[str, Any], ckpt_path: str, run_config: dict[str, Any], module: Any) -> None:
    """The checkpoint's tensors have this run's names and shapes (before Lightning loads them)."""
    from psr.inference.checkpoint import CheckpointError, check_fits

    try:
        check_fits(ckpt, ckpt_path, run_config, {k: v.shape for k, v in module.state_dict().items()})
    except CheckpointError as err:
        raise ConfigError(str(err)) from err


@contextmanager
def _interruptible(interrupt: SaveOnInterrupt) -> Iterator[None]:
    """Run ``fit`` with Lightning's SIGTERM handling (stop at the next batch boundary) instead of the
    entry point's; turn the way Lightning ends on Ctrl-C or SIGTERM (``sys.exit(1)``, a
    ``SIGTERMException``) into a ``KeyboardInterrupt`` that says which ``last.ckpt`` resumes the run."""
    try:
        with default_sigterm():
            yield
    except (SystemExit, KeyboardInterrupt) as err:
        if interrupt.signal is None:
            raise
        stopped: KeyboardInterrupt = Terminated() if interrupt.signal == "SIGTERM" else KeyboardInterrupt()
        if interrupt.saved is not None:
            stopped.kept = (  # type: ignore[attr-defined]
                f"saved {interrupt.saved} at step {interrupt.step}: resume with ckpt_path={interrupt.saved}"
            )
        raise stopped from err


class EpochLossHistory(Callback):
    """The mean training loss of every epoch (``train/loss`` itself is logged per step), from the loss the
    training step returns; ``means`` maps the epoch to it."""

    def __init__(self) -> None:
        self.means: dict[int, float] = {}
        self._sum = 0.0
        self._count = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sum, self._count = 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._sum += float(loss.detach())
            self._count += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._count:
            self.means[int(trainer.current_epoch)] = self._sum / self._count


def _sweep() -> tuple[Path | None, int | None]:
    """The sweep folder and job number when this job is part of a Hydra multirun, else ``(None, None)``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, None
    return Path(str(hydra_cfg.sweep.dir)).resolve(), int(hydra_cfg.job.num)


def sweep_info(cfg: DictConfig) -> dict[str, Any]:
    """``{"dir", "group", "job_num"}``: the multirun's folder, this job's number in it, and the group its
    runs share on W&B (``logger.wandb.group`` when set, else the sweep folder's name; ``None`` outside a
    multirun)."""
    sweep_dir, job_num = _sweep()
    explicit = OmegaConf.select(cfg, "logger.wandb.group", default=None)
    group = str(explicit) if explicit else (sweep_dir.name if sweep_dir is not None else None)
    return {"dir": str(sweep_dir) if sweep_dir is not None else None, "group": group, "job_num": job_num}


@contextmanager
def _ddp_children_run_this_job(trainer: L.Trainer) -> Iterator[None]:
    """Make Lightning's DDP relaunch (``strategy=ddp``) start this job alone, in this job's folder.

    Lightning starts ranks 1… by running the script again with ``sys.argv`` plus
    ``hydra.run.dir=<HydraConfig run.dir>``. In a single run that is this run's folder. In a multirun
    ``sys.argv`` holds ``-m`` and the whole grid, and ``run.dir`` is not the job's folder: every child
    would start the sweep again. For the duration of ``fit`` the children are given this job's own
    overrides (a single run) and its folder instead.
    """
    from hydra.core.hydra_config import HydraConfig

    launcher = getattr(trainer.strategy, "launcher", None)
    sweep_dir, _ = _sweep()
    if sweep_dir is None or type(launcher).__name__ != "_SubprocessScriptLauncher":
        yield
        return
    hydra_cfg = HydraConfig.instance().cfg  # the masked copy {"hydra": ...} the job sees
    assert isinstance(hydra_cfg, DictConfig)
    node = hydra_cfg.hydra
    keep = ("hydra.searchpath", "hydra.job.config", "hydra.verbose", "hydra.job_logging", "hydra/job_logging")
    hydra_overrides = [o for o in node.overrides.hydra if o.split("=", 1)[0].lstrip("+~").startswith(keep)]
    saved_argv, saved_dir = list(sys.argv), str(node.run.dir)
    with read_write(node.run):
        node.run.dir = str(node.runtime.output_dir)
    # hydra.mode=RUN: a job of a sweep config that sets MULTIRUN itself (hparams_search=optuna) must not
    # start the sweep again in every child rank.
    sys.argv = [sys.argv[0], *node.overrides.task, *hydra_overrides, "hydra.mode=RUN"]
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(node.run):
            node.run.dir = saved_dir


def _evaluate_after_training(
    cfg: DictConfig,
    parts: dict[str, Any],
    module: Any,
    trainer: L.Trainer,
    summary: dict[str, Any],
    output_dir: Path,
) -> dict[str, Any]:
    """``cross_eval`` and ``real_eval`` of the best (else last) checkpoint; the in-memory generator when
    no checkpoint was written (``debug=fdr``)."""
    test_crappifiers: dict[str, Any] = parts["test_crappifiers"]
    _, real_pairs, real_overrides = crosseval.settings(cfg)
    checkpoint = summary.get("best_checkpoint") or summary.get("last_checkpoint")
    out: dict[str, Any] = {"eval_checkpoint": checkpoint, "cross_eval": {}, "real_eval": {}}
    if not test_crappifiers and not real_pairs:
        return out
    device = trainer.strategy.root_device
    if checkpoint:
        from psr.inference.checkpoint import load_checkpoint

        net = load_checkpoint(checkpoint, device=device).net
    else:
        net = module.eval_net
    if test_crappifiers:
        for crappifier in test_crappifiers.values():
            if isinstance(crappifier, torch.nn.Module):
                crappifier.to(device)
        batches = crosseval.validation_batches(parts["datamodule"].val_dataloader())
        out["cross_eval"] = crosseval.score_degradations(
            net,
            batches,
            test_crappifiers,
            val_seed=int(cfg.module.get("val_seed", 12345)),
            baseline_mode=str(cfg.module.get("baseline_mode", "bilinear")),
            device=device,
        )
        for name, scores in out["cross_eval"].items():
            log.info(
                "cross_eval %s: PSNR %.2f dB (baseline %.2f dB), SSIM %.3f (baseline %.3f), %d patches",
                name,
                scores["psnr"],
                scores["baseline_psnr"],
                scores["ssim"],
                scores["baseline_ssim"],
                scores["n"],
            )
    if real_pairs:
        if not checkpoint:
            log.warning("cross_eval.real_pairs skipped: this run wrote no checkpoint to evaluate")
        else:
            out["real_eval"] = crosseval.real_pair_scores(
                real_pairs, checkpoint, output_dir / "real_eval", real_overrides
            )
    return out


def _log_evaluations(trainer: L.Trainer, summary: dict[str, Any]) -> None:
    """Send the cross-evaluation figures to the run's loggers (W&B summary, a CSV row)."""
    metrics = {
        f"{kind}/{name}/{key}": float(value)
        for kind in ("cross_eval", "real_eval")
        for name, scores in (summary.get(kind) or {}).items()
        for key, value in scores.items()
    }
    if not metrics:
        return
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
        logger.save()


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON under a temporary name, then rename: never a half-written summary."""
    write_atomic(path, json.dumps(value, indent=2) + "\n")


def summarise(
    cfg: DictConfig,
    module: Any,
    trainer: L.Trainer,
    wall_time: float,
    train_losses: Mapping[int, float] | None = None,
) -> dict[str, Any]:
    """The run's figures: the best validation epoch by the monitored metric, with its baseline, and the
    validation history (each epoch with its mean training loss, where ``train_losses`` has it)."""
    monitor = str(cfg.module.get("monitor", "val/psnr"))
    history: list[dict[str, float]] = list(module.history)
    epochs: list[dict[str, Any]] = []
    for entry in history:
        row: dict[str, Any] = {**entry, "epoch": int(entry["epoch"]), "step": int(entry["step"])}
        if train_losses and int(entry["epoch"]) in train_losses:
            row["train/loss"] = float(train_losses[int(entry["epoch"])])
        epochs.append(row)
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
        # At scale 1 the interpolation baseline is the input itself (the noisy image, for denoising).
        "baseline": str(cfg.module.get("baseline_mode", "bilinear")) if int(cfg.scale) > 1 else "identity",
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "wall_time_s": round(wall_time, 1),
        "best_checkpoint": (best_cb.best_model_path or None) if best_cb else None,
        # With no monitor, a checkpoint callback's "best" is simply the latest save.
        "last_checkpoint": (last_cb.best_model_path or None) if last_cb else None,
        "device": str(trainer.strategy.root_device),
        "torch": torch.__version__,
        "history": epochs,
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
