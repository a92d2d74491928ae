"""End-to-end tests of the evaluation task on tiny checkpoints: crappified, real-pair files, errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image
from scipy.ndimage import gaussian_filter

from psr.tasks.errors import ConfigError
from psr.tasks.evaluate import evaluate, predict_image
from psr.tasks.train import train
from tests.conftest import CONF, ROOT, SHARED_DATA, TINY

EVAL_CONF = CONF / "evaluate"
# A model a tenth of the default's size: these tests check the plumbing, not the restoration.
TINY_MODEL = ["model.n_feats=8", "model.n_groups=1", "model.n_blocks=1", "model.reduction=4"]
HAGEN = SHARED_DATA / "pairs" / "hagen_gigadb_lowhigh_snr"


def _set_hydra(cfg: DictConfig) -> DictConfig:
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _train_checkpoint(run: Path, cache: Path, scale: int) -> Path:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    *TINY,
                    *TINY_MODEL,
                    f"scale={scale}",
                    "trainer.max_epochs=1",
                    f"paths.output_dir={run}",
                    f"paths.cache_dir={cache}",
                ],
                return_hydra_config=True,
            )
        summary = train(_set_hydra(cfg))
    finally:
        GlobalHydra.instance().clear()
    return Path(summary["best_checkpoint"])


@pytest.fixture(scope="module")
def ckpt_x1(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny denoising (scale-1) checkpoint."""
    return _train_checkpoint(tmp_path_factory.mktemp("x1"), cache_dir, 1)


@pytest.fixture(scope="module")
def ckpt_x2(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny ×2 super-resolution checkpoint."""
    return _train_checkpoint(tmp_path_factory.mktemp("x2"), cache_dir, 2)


@pytest.fixture
def compose_eval(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose ``conf/evaluate/evaluate.yaml`` like the entry point does, writing to ``tmp_path/eval``."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(EVAL_CONF), version_base="1.3"):
            cfg = compose(
                "evaluate",
                overrides=[f"output_dir={tmp_path / 'eval'}", "logger=none", *overrides],
                return_hydra_config=True,
            )
        return _set_hydra(cfg)

    yield _compose
    GlobalHydra.instance().clear()


def _scene(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth positive test image in [0, 1]."""
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random(shape) ** 4, 2.0)
    return (img - img.min()) / (img.max() - img.min())


def _noisy(clean: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    return np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)


def _read_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _no_partial_files(run: Path) -> None:
    assert not [p for p in run.rglob("*") if p.name.startswith(".tmp-") or p.name == ".figures-partial"]


def test_crappified_evaluation_writes_metrics_summary_and_figures(
    compose_eval, ckpt_x2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    summary = evaluate(compose_eval(f"ckpt={ckpt_x2}", "crappified.max_size=48"))
    run = tmp_path / "eval"
    rows = _read_rows(run)
    images = sorted({r["image"] for r in rows})
    assert summary["n_images"] == len(images) >= 1 and summary["scale"] == 2
    assert sorted({r["method"] for r in rows}) == ["bicubic", "bilinear", "ground_truth", "model", "nearest"]
    assert len(rows) == 5 * len(images)
    model_rows = [r for r in rows if r["method"] == "model"]
    assert all(r["shape"] == "48x48" for r in model_rows)  # a centred 48² crop, whole-image prediction
    for key in ("psnr", "ssim", "nrmse", "frc_1_7_px", "frc_half_bit_px", "frc1_1_7_px", "frc1_half_bit_px"):
        assert all(np.isfinite(float(r[key])) for r in model_rows), key
    assert all(r["ms_ssim"] == "" for r in model_rows)  # 48 px is too small for five MS-SSIM scales
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["gain_db"].keys() == {"nearest", "bilinear", "bicubic"}
    assert [m["method"] for m in on_disk["methods"]][:2] == ["model", "nearest"]
    assert len(list((run / "figures").glob("*.png"))) == len(images)
    _no_partial_files(run)
    out = capsys.readouterr().out
    assert "| method | images | PSNR (dB) |" in out and "| model |" in out

    # The degradation is seeded: a second evaluation sees the same inputs and scores the same.
    again = evaluate(compose_eval(f"ckpt={ckpt_x2}", "crappified.max_size=48", "figures=false"))
    assert again["methods"][0]["psnr"] == pytest.approx(summary["methods"][0]["psnr"], abs=1e-6)


def test_same_grid_pairs_matched_by_name_from_png_and_tiff(
    compose_eval, ckpt_x1: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    low, high = tmp_path / "low", tmp_path / "high"
    low.mkdir()
    high.mkdir()
    a, b = _scene((40, 48), 0), _scene((40, 48), 1)
    Image.fromarray((_noisy(a, 0) * 255).astype(np.uint8)).save(low / "cells-lowsnr.png")
    Image.fromarray((a * 200).astype(np.uint8)).save(high / "cells-highsnr.png")  # another display scaling
    Image.fromarray((_noisy(b, 1) * 60000).astype(np.uint16)).save(low / "nuclei-lowsnr.png")
    Image.fromarray((b * 4000).astype(np.uint16)).save(high / "nuclei-highsnr.png")
    stack = np.stack([_scene((36, 36), 2), _scene((36, 36), 3)]).astype(np.float32)
    tifffile.imwrite(low / "stack-lowsnr.tif", _noisy(stack, 2).astype(np.float32))
    tifffile.imwrite(high / "stack-highsnr.tif", stack * 7.0)
    summary = evaluate(
        compose_eval(
            f"ckpt={ckpt_x1}",
            "data=pairs",
            f"pairs.low={low}",
            f"pairs.high={high}",
            "pairs.match=stem",
            "pairs.strip=[-lowsnr,-highsnr]",
            "classical=[]",  # the classical denoisers: tests/tasks/test_evaluate_classical.py
        )
    )
    rows = _read_rows(tmp_path / "eval")
    assert sorted({r["image"] for r in rows}) == ["cells", "nuclei", "stack[q=0]", "stack[q=1]"]
    assert sorted({r["method"] for r in rows}) == ["ground_truth", "identity", "model"]
    identity = {r["image"]: float(r["psnr"]) for r in rows if r["method"] == "identity"}
    assert all(np.isfinite(v) and v > 10 for v in identity.values())
    assert summary["gain_db"].keys() == {"identity"}
    assert len(list((tmp_path / "eval" / "figures").glob("*.png"))) == 4


def test_rgb_lookup_table_pngs_by_glob_with_the_max_over_rgb(
    compose_eval, ckpt_x1: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    clean = _scene((32, 32), 4)
    for kind, image in (("low", _noisy(clean, 4)), ("high", clean)):
        rgb = np.zeros((32, 32, 3), np.uint8)
        rgb[..., 1] = (image * 255).astype(np.uint8)  # a green lookup table
        Image.fromarray(rgb).save(tmp_path / f"actin_{kind}.png")
    summary = evaluate(
        compose_eval(
            f"ckpt={ckpt_x1}",
            "data=pairs",
            f"pairs.low={tmp_path}/*_low.png",
            f"pairs.high={tmp_path}/*_high.png",
            "pairs.channel=max",
            "figures=false",
        )
    )
    assert summary["n_images"] == 1
    identity = next(m for m in summary["methods"] if m["method"] == "identity")
    assert identity["psnr"] > 15


def test_super_resolution_pairs_get_interpolation_baselines(
    compose_eval, ckpt_x2: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    for i in range(2):
        hr = _scene((48, 56), 10 + i)
        lr = hr.reshape(24, 2, 28, 2).mean(axis=(1, 3))
        tifffile.imwrite(tmp_path / f"lr_{i}.tif", lr.astype(np.float32))
        tifffile.imwrite(tmp_path / f"hr_{i}.tif", (hr * 1000).astype(np.uint16))
    summary = evaluate(
        compose_eval(
            f"ckpt={ckpt_x2}",
            "data=pairs",
            f"pairs.low={tmp_path}/lr_*.tif",
            f"pairs.high={tmp_path}/hr_*.tif",
            "tile_size=16",  # whole images in 16-pixel tiles, overlapping
            "tile_overlap=4",
        )
    )
    rows = _read_rows(tmp_path / "eval")
    assert summary["n_images"] == 2
    assert {r["method"] for r in rows} == {"model", "nearest", "bilinear", "bicubic", "ground_truth"}
    assert all(r["shape"] == "48x56" for r in rows)
    bicubic = next(m for m in summary["methods"] if m["method"] == "bicubic")
    nearest = next(m for m in summary["methods"] if m["method"] == "nearest")
    assert bicubic["psnr"] > nearest["psnr"]  # smooth images: bicubic beats pixel replication


def test_tiled_prediction_equals_whole_image_prediction_on_odd_shapes() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.PixelShuffle(2)).eval()
    x = torch.rand(1, 2, 37, 53)
    whole = predict_image(net, x, 2, 1, None, 0, 4, torch.device("cpu"))
    tiled = predict_image(net, x, 2, 1, 16, 4, 3, torch.device("cpu"))
    assert whole.shape == tiled.shape == (1, 1, 74, 106)
    assert torch.allclose(whole, tiled, atol=1e-6)


def _write_pair(
    tmp_path: Path, low_shape: tuple[int, ...], high_shape: tuple[int, ...], nan: bool = False
) -> tuple[Path, Path]:
    low = _scene(low_shape[-2:], 5).astype(np.float32)
    if nan:
        low[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "low.tif", low)
    tifffile.imwrite(tmp_path / "high.tif", _scene(high_shape[-2:], 6).astype(np.float32))
    return tmp_path / "low.tif", tmp_path / "high.tif"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_ckpt", "does not exist; expected a .ckpt"),
        ("corrupt_ckpt", "is not a readable PyTorch checkpoint"),
        ("missing_path", "pairs.low=.*does not exist"),
        ("empty_glob", "pairs.high=.*matches no file"),
        ("counts", "pairs.low matches 2 images but pairs.high matches 1"),
        (
            "grid",
            r"pair '\w+/low': low .* is \[32, 32\] but high .* is \[40, 40\]; .* \(scale 1\) needs the same grid",
        ),
        (
            "scale",
            r"\[32, 32\] but high .* is \[48, 48\]; the checkpoint's model \(scale 2\) needs high = 2 × low",
        ),
        ("nan", "low.tif holds 1 NaN/Inf values"),
    ],
)
def test_bad_input_is_one_clear_error_and_nothing_is_written(
    compose_eval, ckpt_x1: Path, ckpt_x2: Path, tmp_path: Path, case: str, message: str
) -> None:  # noqa: ANN001
    ckpt = ckpt_x2 if case == "scale" else ckpt_x1
    low, high = _write_pair(tmp_path, (32, 32), (64, 64) if case == "scale" else (32, 32), nan=case == "nan")
    if case == "grid":
        _write_pair(tmp_path, (32, 32), (40, 40))
    if case == "scale":
        _write_pair(tmp_path, (32, 32), (48, 48))
    overrides = ["data=pairs", f"pairs.low={low}", f"pairs.high={high}"]
    if case == "missing_ckpt":
        ckpt = tmp_path / "nope.ckpt"
    elif case == "corrupt_ckpt":
        ckpt = tmp_path / "corrupt.ckpt"
        ckpt.write_bytes(os.urandom(256))
    elif case == "missing_path":
        overrides[1] = f"pairs.low={tmp_path / 'absent'}"
    elif case == "empty_glob":
        overrides[2] = f"pairs.high={tmp_path}/*.zarr"
    elif case == "counts":
        overrides[1] = f"pairs.low=[{low},{low}]"
    elif case == "nan":  # a good pair first: its figure is drawn, then the NaN stops the run
        good = tmp_path / "good"
        good.mkdir()
        good_low, good_high = _write_pair(good, (32, 32), (32, 32))
        overrides[1:] = [f"pairs.low=[{good_low},{low}]", f"pairs.high=[{good_high},{high}]"]
    with pytest.raises(ConfigError, match=message):
        evaluate(compose_eval(f"ckpt={ckpt}", *overrides))
    run = tmp_path / "eval"
    assert not (run / "metrics.csv").exists() and not (run / "summary.json").exists()
    assert not (run / "figures").exists()
    _no_partial_files(run)


def test_cli_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            f"ckpt={tmp_path / 'missing.ckpt'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: ckpt={tmp_path / 'missing.ckpt'}: checkpoint {tmp_path / 'missing.ckpt'} does not exist;"
        " expected a .ckpt written by psr's train.py"
    ]


def test_the_table_goes_to_wandb_offline(compose_eval, ckpt_x1: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("WANDB_MODE", "offline")
    low, high = _write_pair(tmp_path, (32, 32), (32, 32))
    summary = evaluate(
        compose_eval(
            f"ckpt={ckpt_x1}",
            "data=pairs",
            f"pairs.low={low}",
            f"pairs.high={high}",
            "logger=wandb",
            "figures=false",
        )
    )
    assert summary["wandb"] == "offline"
    runs = list((tmp_path / "eval" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.realdata
def test_real_hagen_pair(compose_eval, ckpt_x1: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """A tiny scale-1 model on the smallest real Hagen pair (nuclei, 512², colour lookup table)."""
    low = HAGEN / "low_snr_images" / "nucleus-lowsnr-sample.png"
    high = HAGEN / "high_snr_images" / "nucleus-highsnr-sample.png"
    if not (low.is_file() and high.is_file()):
        pytest.skip(f"the real Hagen pairs are not in {HAGEN}")
    summary = evaluate(
        compose_eval(
            f"ckpt={ckpt_x1}", "data=hagen", f"pairs.low={low}", f"pairs.high={high}", "figures=false"
        )
    )
    assert summary["n_images"] == 1 and summary["name"] == "hagen"
    by_method = {m["method"]: m for m in summary["methods"]}
    assert np.isfinite(by_method["model"]["psnr"]) and np.isfinite(by_method["identity"]["psnr"])
    assert np.isfinite(by_method["model"]["ms_ssim"])  # 512² allows all five MS-SSIM scales
    assert by_method["model"]["frc_1_7_px"] >= 2.0
