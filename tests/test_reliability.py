"""Nothing lost, nothing silent: faults and bad inputs across train, predict, evaluate and export.

Each case asserts what a user sees (one ``error:`` line, the exit code) and what is left on disk (no
temporary, no empty run folder, a resumable checkpoint). The entry points run as subprocesses where the
case is about the process (signals, locks, the command line); the rest call the same code in-process.
Here: training stopped by SIGTERM, the checks on resuming and runs resumed bit-identically, and
prediction, most with one tiny trained model (``trained``, trained once for this module); full disks, run
folders, training inputs, export and sweep settings and ingest are in ``test_reliability_runs.py``, which
imports this module's helpers.
"""

from __future__ import annotations

import errno
import json
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
from hydra.core.global_hydra import GlobalHydra

from psr.tasks import entry
from psr.tasks.errors import ConfigError
from tests.conftest import ROOT, TINY, compose_entry
from tests.test_reliability_processes import write_corrupt_strips

ENV = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict:
    """One tiny training (RCAN ×4, 2 steps) and its summary."""
    from psr.tasks.train import train

    run = tmp_path_factory.mktemp("trained")
    try:
        return train(compose_entry(run, cache_dir, "trainer.max_epochs=1"))
    finally:
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


# --- resume: bit-identical to an uninterrupted run, with any number of workers ------------------


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
