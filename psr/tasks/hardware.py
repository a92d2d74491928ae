"""The machine a training runs on: data-loader settings and torch threads picked from it.

``loader_settings`` fills the loader settings a data config leaves null (``data.num_workers`` etc.) and
``set_threads`` sets torch's threads for ``trainer=cpu``; both log what they picked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from psr.tasks.errors import ConfigError

log = logging.getLogger(__name__)

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
