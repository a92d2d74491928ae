"""Nothing lost, nothing silent: faults and bad inputs across train, predict, evaluate and export.

Each case asserts what a user sees (one ``error:`` line, the exit code) and what is left on disk (no
temporary, no empty run folder, a resumable checkpoint). The entry points run as subprocesses where the
case is about the process (signals, locks, the command line); the rest call the same code in-process.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

from psr.faults import os_error_sentence
from psr.tasks import entry
from psr.tasks.checkpointing import AtomicCheckpointIO
from psr.tasks.errors import ConfigError
from tests.conftest import CONF, ROOT, TINY
from tests.test_reliability_processes import LOCK, write_corrupt_strips

ENV = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def _compose(run: Path, cache: Path, *overrides: str, config: str = "train") -> object:
    GlobalHydra.instance().clear()
    other_data = any(o.startswith("data=") for o in overrides)
    tiny = [o for o in TINY if not (other_data and o.startswith(("data.n_images", "data.image_size")))]
    base = [*tiny, f"paths.output_dir={run}", f"paths.cache_dir={cache}"] if config == "train" else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=[*base, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict:
    """One tiny training (RCAN ×4, 2 steps) and its summary."""
    from psr.tasks.train import train

    run = tmp_path_factory.mktemp("trained")
    try:
        return train(_compose(run, cache_dir, "trainer.max_epochs=1"))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def configure(tmp_path: Path, cache_dir: Path) -> Iterator:
    """Compose a config as its entry point does: ``configure(*overrides, config="train")``."""
    yield lambda *o, config="train": _compose(tmp_path / "run", cache_dir, *o, config=config)
    GlobalHydra.instance().clear()


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _script(name: str, *args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, "PSR_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, str(ROOT / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


# --- training: SIGTERM, progress, resume ---------------------------------------------------------


def test_sigterm_during_training_saves_a_resumable_last_ckpt(
    tmp_path: Path, cache_dir: Path, configure
) -> None:  # noqa: ANN001
    """SLURM preemption: one error line, exit 143, a last.ckpt that resumes at the step it stopped; and
    on a stdout that is not a terminal, progress lines (step, epoch, loss, time left) as it runs."""
    run, log = tmp_path / "sigterm-run", tmp_path / "stdout.txt"
    args = [*TINY, "data.samples_per_epoch=4000", "trainer.max_epochs=1", "callbacks.progress_log.every_s=0"]
    env = {**os.environ, **ENV, "PSR_CACHE_DIR": str(cache_dir)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "train.py", *args, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 90
        while "step 3/" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr[-2000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    (error,) = _errors(stderr)
    assert error.startswith(f"error: interrupted by SIGTERM; saved {ckpt} at step ")
    assert error.endswith(f"resume with ckpt_path={ckpt}")
    assert "Traceback" not in stderr and _temporaries(run) == []
    step = int(error.split(" at step ")[1].split(":")[0])
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == step
    stdout = log.read_text()
    assert "step 3/2000 (0%), epoch 1/1, loss " in stdout and " left" in stdout
    train_log = (run / "train.log").read_text()
    assert "step 3/2000" in train_log and "model: net RCAN" in train_log
    assert "FLOPs" not in train_log + stdout

    from psr.tasks.train import train

    resumed = train(
        configure("data.samples_per_epoch=4000", f"trainer.max_steps={step + 1}", f"ckpt_path={ckpt}")
    )
    assert resumed["steps"] == step + 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p, t: p.write_bytes(b"not a checkpoint"), "is not a readable PyTorch checkpoint"),
        (lambda p, t: torch.save({"state_dict": {}}, p), "holds weights but no training state"),
        (
            lambda p, t: torch.save({**t, "psr_config": None}, p),
            "was not written by psr's train.py or segment.py (it carries no psr_config)",
        ),
    ],
    ids=["random-bytes", "weights-only", "foreign-lightning"],
)
def test_resume_refuses_a_foreign_file_in_one_sentence(
    configure, trained: dict, tmp_path: Path, make, message: str
) -> None:  # noqa: ANN001
    ckpt = torch.load(trained["last_checkpoint"], map_location="cpu", weights_only=True)
    path = tmp_path / "other.ckpt"
    make(path, ckpt)
    from psr.tasks.train import train

    with pytest.raises(ConfigError) as err:
        train(configure(f"ckpt_path={path}"))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=unet"], "holds model RCAN but this run trains model UNet"),
        (["scale=2"], "was trained with scale=4 but this run has scale=2"),
        (
            ["model.in_channels=2"],
            "was trained with model.in_channels=1 but this run has model.in_channels=2",
        ),
        (["model.n_feats=16"], "has shape [32] in the checkpoint but [16] here"),
    ],
    ids=["model", "scale", "channels", "shapes"],
)
def test_resume_names_what_differs(configure, trained: dict, overrides: list[str], message: str) -> None:  # noqa: ANN001
    from psr.tasks.train import train

    with pytest.raises(ConfigError, match=r"ckpt_path=\S+last\.ckpt") as err:
        train(configure(*overrides, f"ckpt_path={trained['last_checkpoint']}"))
    assert message in str(err.value)


def test_summary_records_the_resolved_crappifier(trained: dict) -> None:
    config = trained["crappifier_config"]
    assert config["_target_"] == "psr.crappifiers.Chain"
    assert config["steps"][0]["factor"] == 4  # ${scale} resolved
    on_disk = json.loads((Path(trained["last_checkpoint"]).parents[1] / "summary.json").read_text())
    assert on_disk["crappifier_config"] == config


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


# --- prediction: SIGTERM, whole-input checks, paths ----------------------------------------------


def test_sigterm_during_predict_leaves_nothing(tmp_path: Path, cache_dir: Path, trained: dict) -> None:
    image = tmp_path / "series.tif"
    frames = np.random.default_rng(0).random((40, 96, 96)).astype(np.float32)
    tifffile.imwrite(image, frames, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "restored.tif"
    env = {**os.environ, **ENV}
    args = [f"ckpt={trained['last_checkpoint']}", f"input={image}", f"output={out}", "tile=32", "overlap=8"]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "predict.py"), *args, "progress=false"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not _temporaries(tmp_path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr[-2000:]
    assert _errors(stderr) == ["error: interrupted by SIGTERM; no output was written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series.tif"]


def test_paths_with_spaces_and_non_ascii_characters(tmp_path: Path, cache_dir: Path, trained: dict) -> None:
    folder = tmp_path / "µm scans"
    folder.mkdir()
    image = folder / "Zelle ä 1.tif"
    tifffile.imwrite(image, (np.random.default_rng(1).random((24, 24)) * 900).astype(np.uint16))
    out = folder / "restored ü.tif"
    quoted = [f"ckpt={trained['last_checkpoint']}", f'input="{image}"', f'output="{out}"', "progress=false"]
    result = _script("predict.py", *quoted, cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"psr: wrote {out} " in result.stdout and tifffile.imread(out).shape == (96, 96)
    unquoted = _script("predict.py", f"input={image}", cwd=tmp_path, cache=cache_dir)
    assert unquoted.returncode == 2
    assert _errors(unquoted.stderr) == [
        f"error: cannot parse the override 'input={image}': quote a value with spaces, non-ASCII or special"
        f" characters, e.g. 'input=\"{image}\"' in the shell (single quotes around, double quotes inside)"
    ]


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.eye(40, dtype=bool), "has bool pixels; expected intensities"),
        (np.eye(40, dtype=np.complex64), "has complex64 pixels; expected intensities"),
    ],
    ids=["bool", "complex"],
)
def test_predict_refuses_pixels_that_are_not_intensities(
    configure, trained: dict, tmp_path: Path, pixels, message: str
) -> None:  # noqa: ANN001
    from psr.tasks.predict import predict

    image = tmp_path / "in.tif"
    tifffile.imwrite(image, pixels)
    cfg = configure(
        f"ckpt={trained['last_checkpoint']}",
        f"input={image}",
        f"output={tmp_path / 'o.tif'}",
        "progress=false",
        config="predict",
    )
    with pytest.raises(ConfigError, match=message):
        predict(cfg)


def test_one_nan_outside_the_sampled_pixels_is_found(
    configure, trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """The intensity statistics sample the input; the NaN check reads every pixel, block by block."""
    import psr.inference.images as images
    from psr.tasks.predict import predict

    monkeypatch.setattr(images, "STATS_SUBSAMPLE", 64)  # a sample that misses (51, 67)
    pixels = np.random.default_rng(0).random((97, 101)).astype(np.float32)
    pixels[51, 67] = np.nan
    image = tmp_path / "nan.tif"
    tifffile.imwrite(image, pixels)
    out = tmp_path / "o.ome.zarr"
    cfg = configure(
        f"ckpt={trained['last_checkpoint']}",
        f"input={image}",
        f"output={out}",
        "tile=32",
        "overlap=8",
        "memory_budget=1000",
        config="predict",
    )
    with pytest.raises(
        ConfigError, match=r"has 1 NaN or infinite value\(s\) in the block read at spatial index \[51, 67\]"
    ):
        predict(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.tif"]


def test_an_unwritable_output_is_one_line(
    configure, trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # noqa: ANN001
    from psr.inference import writers
    from psr.tasks.predict import predict

    def refuse(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(writers.TiffSink, "write_plane", refuse)
    image = tmp_path / "in.tif"
    tifffile.imwrite(image, np.arange(400, dtype=np.uint16).reshape(20, 20))
    out = tmp_path / "o.tif"
    with pytest.raises(SystemExit) as exit_:
        entry.run_task(
            predict,
            configure(
                f"ckpt={trained['last_checkpoint']}", f"input={image}", f"output={out}", config="predict"
            ),
        )
    assert exit_.value.code == 2
    assert _errors(capsys.readouterr().err) == [
        f"error: permission denied writing {out}; write somewhere you may write, or get write permission there;"
        " no output was written"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


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


def test_a_corrupt_compressed_strip_is_one_sentence(configure, trained: dict, tmp_path: Path) -> None:  # noqa: ANN001
    from psr.tasks.predict import predict

    image = tmp_path / "strips.tif"
    write_corrupt_strips(image)
    out = tmp_path / "o.tif"
    cfg = configure(f"ckpt={trained['last_checkpoint']}", f"input={image}", f"output={out}", config="predict")
    with pytest.raises(
        ConfigError, match=rf"input {image} cannot be read \(DeflateError: .*\); the file is damaged"
    ):
        predict(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["strips.tif"]


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(
    configure, tmp_path: Path, monkeypatch
) -> None:  # noqa: ANN001
    """Stopped after its first epoch and resumed from last.ckpt, a run ends with the same weights as the
    run that was not stopped: the random streams (loader, patches, degradations) travel in the checkpoint."""
    import psr.tasks.train as task

    settings = ["data.samples_per_epoch=8", "trainer.max_epochs=2", "trainer.num_sanity_val_steps=1"]
    full = task.train(configure(*settings, "paths.output_dir=" + str(tmp_path / "full")))

    class StopAtSecondEpoch(task.EpochLossHistory):
        def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            super().on_train_epoch_start(trainer, pl_module)
            if trainer.current_epoch == 1:
                raise RuntimeError("stopped")

    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        patch.setattr(task, "EpochLossHistory", StopAtSecondEpoch)
        with pytest.raises(RuntimeError, match="stopped"):
            task.train(configure(*settings, f"paths.output_dir={stopped}"))
    last = stopped / "checkpoints" / "last.ckpt"
    resumed = task.train(configure(*settings, f"paths.output_dir={stopped}", f"ckpt_path={last}"))
    _assert_same_run(full, resumed)


def _assert_same_run(full: dict, resumed: dict) -> None:
    """Both runs took 8 steps and ended with the same weights and the same best validation PSNR."""
    assert resumed["steps"] == full["steps"] == 8
    weights = [
        torch.load(s["last_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
        for s in (full, resumed)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert resumed["best"]["val/psnr"] == full["best"]["val/psnr"]


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


@pytest.mark.parametrize(("workers", "stop"), [(0, "checkpoint"), (2, "checkpoint"), (2, "sigterm")])
def test_a_run_resumed_mid_epoch_is_bit_identical_with_any_number_of_workers(
    configure, tmp_path: Path, monkeypatch, workers: int, stop: str
) -> None:  # noqa: ANN001
    """Stopped in the middle of its second epoch (by a checkpoint saved as a batch ended, as
    ``every_n_train_steps`` does, or by SIGTERM, which saves last.ckpt at the next batch boundary) and
    resumed with ``workers`` loader workers, a run ends with the same weights and metrics as the
    uninterrupted run with none: each patch is drawn from (seed, epoch, index) and the resumed epoch
    continues at the sample where it stopped."""
    import psr.tasks.train as task

    settings = ["data.samples_per_epoch=8", "trainer.max_epochs=2", "trainer.num_sanity_val_steps=1"]
    full = task.train(configure(*settings, "paths.output_dir=" + str(tmp_path / "full")))
    stopped = tmp_path / "stopped"
    last = stopped / "checkpoints" / "last.ckpt"

    class StopMidEpoch(task.EpochLossHistory):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if trainer.global_step != 6:  # the second of the second epoch's four steps
                return
            if stop == "sigterm":
                trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets
                return
            trainer.save_checkpoint(last)
            raise RuntimeError("stopped")

    later = [*settings, f"data.num_workers={workers}", "data.persistent_workers=false"]
    with monkeypatch.context() as patch:
        patch.setattr(task, "EpochLossHistory", StopMidEpoch)
        with pytest.raises(RuntimeError if stop == "checkpoint" else KeyboardInterrupt):
            task.train(configure(*later, f"paths.output_dir={stopped}"))
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6
    resumed = task.train(configure(*later, f"paths.output_dir={stopped}", f"ckpt_path={last}"))
    _assert_same_run(full, resumed)
