"""Start-up cost of a training run: ``python scripts/bench_startup.py [--repeats 3] [--top 12] [overrides]``.

Runs ``train.py <overrides>`` (default ``model=care_unet logger=none trainer=cpu``, the demo data) in
fresh processes, exactly as a user starts it, with one extra callback (written to a temporary folder and
added with ``+callbacks.startup_probe._target_=...``) that records, in seconds since the parent started
the process (interpreter start-up included):

- ``fit start``: imports, Hydra, building the datamodule, model and trainer;
- ``train start``: after Lightning's set-up and the sanity validation batch;
- ``first step``: after the first optimiser step (the end of the first training batch);

and the CPU time the training process had used by then (``time.process_time``: all its threads, not the
loader workers), which depends much less on what else runs on the machine than the wall time. At the
first step the callback stops the run (``trainer.should_stop``); the run then ends normally.

A last run under ``python -X importtime`` gives the import costs: the total (the sum of every module's
own time), the packages that cost most, and the modules psr's own code imports directly (where a lazy
import in psr would pay). ``-X importtime`` slows imports a little, so the timed runs do not use it.

Prints one Markdown report; ``--out`` also writes it as JSON. Figures on a shared machine vary with its
load (the report gives the load average); the best of ``--repeats`` runs is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OVERRIDES = ["model=care_unet", "logger=none", "trainer=cpu"]
PROBE_MODULE = "_psr_startup_probe"

# The callback the timed processes run; a file of its own so that the parent never imports Lightning.
PROBE_SOURCE = '''"""Written by scripts/bench_startup.py: marks the start-up milestones of one training run."""
import json
import os
import sys
import time

from lightning.pytorch.callbacks import Callback

T0 = float(os.environ["PSR_STARTUP_T0"])


class FirstStepProbe(Callback):
    def __init__(self) -> None:
        self.marks: dict = {}

    def _mark(self, name: str) -> None:
        self.marks.setdefault(name, time.time() - T0)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._mark("fit_start")

    def on_train_start(self, trainer, pl_module) -> None:
        self._mark("train_start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "first_step" in self.marks:
            return
        self._mark("first_step")
        self.marks["cpu_s"] = time.process_time()
        self.marks["modules"] = sorted(sys.modules)
        with open(os.environ["PSR_STARTUP_OUT"], "w") as f:
            json.dump(self.marks, f)
        trainer.should_stop = True
'''


@dataclass
class Import:
    """One line of ``python -X importtime``: the module, its own and cumulative microseconds, its depth."""

    name: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(text: str) -> list[Import]:
    """The ``-X importtime`` lines of ``text`` (other lines are skipped), in the order Python printed them
    (a module after everything it imported)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append(Import(name.strip(), int(own), int(cumulative), depth))
    return rows


def import_costs(rows: list[Import], top: int) -> dict[str, Any]:
    """Total import seconds, the ``top`` packages by their modules' own time, and the non-psr modules
    that psr's own modules import directly, by cumulative time (``[name, importer, seconds]``)."""
    parent: list[int | None] = [None] * len(rows)
    waiting: dict[int, list[int]] = {}  # depth → rows printed before their importer
    for i, row in enumerate(rows):
        for child in waiting.pop(row.depth + 1, []):
            parent[child] = i
        waiting.setdefault(row.depth, []).append(i)
    packages: Counter[str] = Counter()
    for row in rows:
        packages[row.name.split(".")[0]] += row.self_us
    by_psr: list[tuple[str, str, float]] = []
    for i, row in enumerate(rows):
        p = parent[i]
        if p is not None and _is_psr(rows[p].name) and not _is_psr(row.name):
            by_psr.append((row.name, rows[p].name, row.cumulative_us / 1e6))
    by_psr.sort(key=lambda r: -r[2])
    return {
        "total_s": sum(r.self_us for r in rows) / 1e6,
        "psr_own_s": packages["psr"] / 1e6,
        "packages": [[name, us / 1e6] for name, us in packages.most_common(top)],
        "imported_by_psr": [list(r) for r in by_psr[:top]],
    }


def _is_psr(name: str) -> bool:
    return name == "psr" or name.startswith("psr.")


def run_once(overrides: list[str], probe_dir: Path, importtime: bool, timeout: float) -> dict[str, Any]:
    """One ``train.py`` process up to its first optimiser step: the probe's marks, and (with
    ``importtime``) its ``-X importtime`` lines under ``"importtime"``."""
    with tempfile.TemporaryDirectory(prefix="psr-startup-") as tmp:
        out = Path(tmp) / "marks.json"
        args = [
            *overrides,
            f"+callbacks.startup_probe._target_={PROBE_MODULE}.FirstStepProbe",
            f"paths.output_dir={Path(tmp) / 'run'}",
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(probe_dir), os.environ.get("PYTHONPATH")])),
            "PSR_STARTUP_OUT": str(out),
            "WANDB_MODE": "disabled",
        }
        command = [sys.executable, *(["-X", "importtime"] if importtime else []), "train.py", *args]
        env["PSR_STARTUP_T0"] = repr(time.time())
        proc = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if not out.is_file():
            lines = proc.stderr.strip().splitlines()  # Hydra says what is wrong first, Python last
            tail = "\n".join(lines if len(lines) <= 30 else [*lines[:5], "...", *lines[-10:]])
            raise SystemExit(
                f"bench_startup: train.py {shlex.join(overrides)} ended (exit {proc.returncode}) "
                f"before its first training step:\n{tail}"
            )
        marks: dict[str, Any] = json.loads(out.read_text())
        if importtime:
            marks["importtime"] = proc.stderr
        return marks


def measure(overrides: list[str], repeats: int, top: int, timeout: float) -> dict[str, Any]:
    """The best of ``repeats`` timed runs, one ``-X importtime`` run, and the import costs."""
    with tempfile.TemporaryDirectory(prefix="psr-probe-") as probe_dir:
        (Path(probe_dir) / f"{PROBE_MODULE}.py").write_text(PROBE_SOURCE)
        runs = [run_once(overrides, Path(probe_dir), False, timeout) for _ in range(repeats)]
        profiled = run_once(overrides, Path(probe_dir), True, timeout)
    best = min(runs, key=lambda r: r["first_step"])
    modules = set(best["modules"])
    return {
        "overrides": overrides,
        "runs": [{k: round(v, 3) for k, v in r.items() if k != "modules"} for r in runs],
        "best": {k: round(v, 3) for k, v in best.items() if k != "modules"},
        "imports": import_costs(parse_importtime(profiled["importtime"]), top),
        "heavy_imported": sorted(
            m
            for m in ("timm", "segmentation_models_pytorch", "torchvision", "dask", "xarray", "wandb")
            if m in modules
        ),
        "machine": _machine(),
    }


def _machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"load average {load:.2f}; Python {platform.python_version()}"
    )


def report(result: dict[str, Any]) -> str:
    best, imports = result["best"], result["imports"]
    lines = [
        "# psr start-up: process start → first training step",
        "",
        f"`train.py {shlex.join(result['overrides'])}`; {result['machine']}; best of "
        f"{len(result['runs'])} run(s) (first step: "
        + ", ".join(f"{r['first_step']:.2f}" for r in result["runs"])
        + " s)",
        "",
        "| milestone | wall s since process start |",
        "|---|---:|",
        f"| fit start (imports, Hydra, datamodule, model, trainer) | {best['fit_start']:.2f} |",
        f"| train start (Lightning set-up, sanity validation) | {best['train_start']:.2f} |",
        f"| first optimiser step | {best['first_step']:.2f} |",
        f"| CPU time of the training process at the first step | {best['cpu_s']:.2f} |",
        "",
        f"Imports (`-X importtime`, one more run): {imports['total_s']:.2f} s in all, of which psr's own "
        f"modules {imports['psr_own_s']:.2f} s. Heavy packages loaded: "
        + (", ".join(result["heavy_imported"]) or "none")
        + " (torchvision: through Lightning's torchmetrics).",
        "",
        "| package | own import s |",
        "|---|---:|",
        *(f"| {name} | {s:.3f} |" for name, s in imports["packages"]),
        "",
        "Imported directly by psr's modules (cumulative s):",
        "",
        "| module | imported by | s |",
        "|---|---|---:|",
        *(f"| {name} | {by} | {s:.3f} |" for name, by, s in imports["imported_by_psr"]),
        "",
        "command: " + shlex.join([Path(sys.executable).name, *sys.argv]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "overrides", nargs="*", help=f"train.py overrides (default: {' '.join(DEFAULT_OVERRIDES)})"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--top", type=int, default=12, help="rows of the import tables")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    result = measure(args.overrides or DEFAULT_OVERRIDES, args.repeats, args.top, args.timeout)
    print(report(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
