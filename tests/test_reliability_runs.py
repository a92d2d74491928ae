"""Nothing lost, nothing silent, without a trained model: full disks while writing checkpoints, run
folders (collisions, locks, failed commands), training inputs (bool pixels, NaNs), export and sweep
settings, and faults while ingesting.

Training stopped by SIGTERM, resuming and prediction (most with the tiny trained model), and the helpers
this module shares, are in ``test_reliability.py``; the cases where each command runs in its own process
are in ``test_reliability_processes.py``.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, read_write

from psr.faults import os_error_sentence
from psr.tasks import entry
from psr.tasks.checkpointing import AtomicCheckpointIO
from psr.tasks.errors import ConfigError
from tests.conftest import CONF, ROOT
from tests.test_reliability import _errors, _script, _temporaries
from tests.test_reliability_processes import LOCK

# --- writes: atomic checkpoints, full disks ------------------------------------------------------


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """Every ``Path.write_bytes`` writes ``limit`` bytes, then fails as a full disk does."""

    def write_bytes(self: Path, data) -> int:  # noqa: ANN001
        with self.open("wb") as f:
            f.write(bytes(memoryview(data)[:limit]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def test_a_checkpoint_is_complete_or_absent_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, target)
    before = target.read_bytes()
    _disk_full_after(monkeypatch, 100)
    with pytest.raises(OSError) as err:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}}, target)
    assert err.value.filename == str(target)
    assert os_error_sentence(err.value) == (
        f"no space left on device writing {target}; free some space on that disk, or write elsewhere"
    )
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_full_disk_during_training_is_one_line(
    configure, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:  # noqa: ANN001
    from psr.tasks.train import train

    _disk_full_after(monkeypatch, 10)
    with pytest.raises(SystemExit) as exit_:
        entry.run_task(train, configure("trainer.max_epochs=1"))
    assert exit_.value.code == 2
    (error,) = _errors(capsys.readouterr().err)
    assert error.startswith(f"error: no space left on device writing {tmp_path / 'run' / 'checkpoints'}/")
    assert _temporaries(tmp_path / "run") == []


# --- run folders: collisions, locks, failures ----------------------------------------------------


def test_run_folders_of_two_processes_differ() -> None:
    code = "from psr.tasks import entry; print(entry._UID)"
    uids = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
        for _ in "ab"
    }
    assert len(uids) == 2 and all(len(u) == 6 for u in uids)
    config = OmegaConf.to_container(OmegaConf.load(CONF / "hydra" / "default.yaml"))
    assert "${psr.uid:}" in config["run"]["dir"] and "${psr.uid:}" in config["sweep"]["dir"]  # type: ignore[index]


def test_a_locked_run_folder_is_refused_and_left_alone(configure, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Two trainings given one folder, the first in another process: the second stops with one line and
    touches nothing there."""
    from psr.tasks.train import train

    run = tmp_path / "busy"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    cfg = configure()
    with read_write(HydraConfig.get().runtime):
        HydraConfig.get().runtime.output_dir = str(run)  # the folder Hydra made for this job
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK, str(run / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as exit_:
            entry.run_task(train, cfg)  # a multirun job: run_task takes its folder's lock
    finally:
        holder.kill()
        holder.wait()
    assert exit_.value.code == 2
    assert _errors(capsys.readouterr().err) == [
        f"error: run folder {run} is in use by another running psr process; wait for it to finish or pick"
        " another folder (hydra.run.dir=...)"
    ]
    assert sorted(p.name for p in run.iterdir()) == [".lock", "summary.json"]
    assert (run / "summary.json").read_text() == "{}"


def test_failed_commands_leave_no_run_folder(tmp_path: Path, cache_dir: Path) -> None:
    """A config error in train, a missing checkpoint in evaluate: one line, exit 2, no run folder under
    outputs/ (predict makes none: see test_sigterm_during_predict_leaves_nothing)."""
    cases = [
        (
            "train.py",
            ["data.patch_size=30", "logger=none"],
            "data.patch_size=30 is not divisible by the scale 4",
        ),
        ("evaluate.py", ["ckpt=missing.ckpt", "logger=none"], "missing.ckpt"),
    ]
    for script, args, message in cases:
        result = _script(script, *args, cwd=tmp_path, cache=cache_dir)
        assert result.returncode == 2, result.stderr[-2000:]
        (error,) = _errors(result.stderr)
        assert message in error and "Traceback" not in result.stderr
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("outputs/**/*"))
    assert left in ([], ["outputs/evaluate", "outputs/runs"])


def test_remove_if_empty_keeps_results_and_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = tmp_path / "2026-01-02"
    empty, full = day / "a", day / "b"
    for folder in (empty, full):
        (folder / ".hydra").mkdir(parents=True)
        (folder / "train.log").write_text("log")
        (folder / "panels").mkdir()
    (full / "checkpoints").mkdir()
    (full / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert entry.remove_if_empty(empty) and not empty.exists()
    assert not entry.remove_if_empty(full) and full.exists() and day.exists()
    monkeypatch.chdir(full / "panels")
    assert not entry.remove_if_empty(full / "panels")


# --- training data, export, sweeps ---------------------------------------------------------------


def test_training_refuses_bool_images(configure, tmp_path: Path) -> None:  # noqa: ANN001
    from psr.tasks.train import train

    store = tmp_path / "masks.zarr"
    zarr.create_array(str(store), shape=(64, 64), dtype=bool, chunks=(64, 64))[...] = np.eye(64, dtype=bool)
    with pytest.raises(
        ConfigError, match=r"data: image \S+masks\.zarr has bool pixels; expected intensities"
    ):
        train(configure("data=zarr", f"data.path={store}", "data.patch_size=32", "data.num_workers=0"))


def test_training_finds_a_nan_the_statistics_sample_skips(configure, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from psr.data import statistics
    from psr.tasks.train import train

    monkeypatch.setattr(statistics, "STATS_SUBSAMPLE", 64)  # every 8th pixel: (51, 67) is not sampled
    store = tmp_path / "cells.zarr"
    pixels = np.random.default_rng(0).random((128, 128)).astype(np.float32)
    pixels[51, 67] = np.nan
    zarr.create_array(str(store), shape=pixels.shape, dtype="float32", chunks=(64, 64))[...] = pixels
    with pytest.raises(ConfigError, match=r"image \S+cells\.zarr holds 1 NaN/Inf values; expected finite"):
        train(configure("data=zarr", f"data.path={store}", "data.patch_size=32", "data.num_workers=0"))


def test_the_finite_check_reads_every_block() -> None:
    from psr.data.statistics import _blocks

    regions = _blocks((3, 100, 70), max_values=1000)
    covered = np.zeros((3, 100, 70), dtype=int)
    for region in regions:
        assert covered[region].size <= 1000
        covered[region] += 1
    assert (covered == 1).all()  # every pixel read exactly once


def test_export_suffix_must_match_the_format(configure) -> None:  # noqa: ANN001
    from psr.tasks.export import export

    with pytest.raises(ConfigError) as err:
        export(configure("ckpt=never-read.ckpt", "format=onnx", "output=model.zip", config="export"))
    assert str(err.value) == (
        "output=model.zip ends in .zip but format=onnx writes a .onnx file; name it model.onnx,"
        " or format=bioimageio for a .zip file"
    )


def test_multirun_job_folders_name_the_swept_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        ["train.py", "-m", "loss=l1,mse", "module.optimizer.lr=1e-3,1e-4", "seed=0,1", "data.path=/a b"],
    )
    job = ["loss=mse", "module.optimizer.lr=1e-4", "seed=1", "data.path=/a b"]
    assert entry._swept(job) == "-loss=mse,module.optimizer.lr=1e-4"  # seed is in the name already
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "seed=3"])
    assert entry._swept(["seed=3"]) == ""


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        (
            "enospc",
            2,
            "error: no space left on device writing {path}; free some space on that disk, or write elsewhere;"
            " no store was written",
        ),
        ("sigterm", 143, "error: interrupted by SIGTERM; no store was written"),
    ],
)
def test_ingest_faults_are_one_line_and_leave_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, fault: str, code: int, message: str
) -> None:  # noqa: ANN001
    import importlib.util

    import psr.data.ingest.write as write

    spec = importlib.util.spec_from_file_location("ingest_script", ROOT / "scripts" / "ingest.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tifffile.imwrite(tmp_path / "a.tif", (np.random.default_rng(0).random((32, 32)) * 900).astype(np.uint16))
    out = tmp_path / "out.ome.zarr"
    real = write.write_image

    def failing(root, name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        real(root, name, *args, **kwargs)  # the temporary store holds a whole image by now
        if fault == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / name / "0"))

    monkeypatch.setattr(write, "write_image", failing)
    assert script.main([str(tmp_path / "a.tif"), "-o", str(out), "-q"]) == code
    assert _errors(capsys.readouterr().err) == [message.format(path=out)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
