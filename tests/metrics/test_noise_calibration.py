"""Blind Poisson–Gaussian noise estimation (psr.metrics.noise) and scripts/calibrate_noise.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tifffile
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.ndimage import gaussian_filter

from psr.metrics.noise import NoiseEstimationError, estimate_noise
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "calibrate_noise.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("calibrate_noise", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _clean(seed: int, n: int = 256) -> np.ndarray:
    """A noise-free image in [0, 1]: flat plateaus at five levels (top half) and a graded ramp with
    smooth texture (bottom half), edges softened by a 1 px Gaussian."""
    rng = np.random.default_rng(seed)
    f = gaussian_filter(rng.normal(size=(n, n)), 12)
    f = (f - f.min()) / (f.max() - f.min())
    plateaus = np.floor(f * 5) / 4
    ramp = np.linspace(0, 1, n)[None, :] * np.ones((n, 1))
    img = np.where(np.arange(n)[:, None] < n // 2, plateaus, 0.7 * ramp + 0.1 * f)
    return gaussian_filter(img, 1.0)


def _noisy(u: np.ndarray, photons: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(u * photons) / photons + rng.normal(0.0, sigma, u.shape)


@pytest.mark.parametrize(
    ("photons", "sigma", "quantise"), [(100.0, 0.02, False), (30.0, 0.03, True), (300.0, 0.01, True)]
)
def test_recovers_known_photons_and_read_noise(photons: float, sigma: float, quantise: bool) -> None:
    rng = np.random.default_rng(1)
    frames = [_noisy(_clean(s), photons, sigma, rng) for s in range(3)]
    low, high, step = -0.25, 1.25, None
    if quantise:  # 8-bit storage over a range wide enough not to clip
        step = (high - low) / 255
        frames = [np.round((np.clip(f, low, high) - low) / step) * step + low for f in frames]
    fit = estimate_noise(frames, clip=(low, high) if quantise else (None, None), quant_step=step)
    assert fit.photons == pytest.approx(photons, rel=0.10)
    assert fit.read_sigma == pytest.approx(sigma, rel=0.10)
    assert fit.rel_rms < 0.1
    assert int(fit.used.sum()) >= 10


def test_clipped_levels_are_left_out() -> None:
    """Saturation at 0.6 truncates the noise of bright bins: they are excluded, the fit stays right."""
    rng = np.random.default_rng(2)
    frames = [np.minimum(_noisy(_clean(s), 100.0, 0.02, rng), 0.6) for s in range(3)]
    fit = estimate_noise(frames, clip=(None, 0.6))
    assert fit.photons == pytest.approx(100.0, rel=0.10)
    assert fit.levels[fit.used].max() < 0.6
    with pytest.raises(NoiseEstimationError):
        estimate_noise([np.full((64, 64), 0.5)])


def _write_raw(folder: Path, n: int = 3) -> None:
    """Raw uint16 camera frames: offset 100 ADU, 2 ADU per photon at 50 photons peak, read noise 3 ADU."""
    rng = np.random.default_rng(3)
    folder.mkdir()
    for s in range(n):
        adu = 100 + 2 * rng.poisson(50 * _clean(s, 192)) + rng.normal(0, 3.0, (192, 192))
        tifffile.imwrite(folder / f"{s:03d}.tif", np.round(adu).astype(np.uint16))


def test_preset_round_trip(tmp_path: Path) -> None:
    """The written preset, applied to a clean image, reproduces the calibrated variance-vs-mean."""
    raw = tmp_path / "raw"
    _write_raw(raw)
    out = tmp_path / "calibrated.yaml"
    _load_script().main([str(raw), "--out", str(out), "--photons", "median"])
    text = out.read_text()
    assert text.startswith("# Calibrated by scripts/calibrate_noise.py")
    tree = yaml.safe_load(text)
    photons, sigma = tree["steps"][1]["photons"], tree["steps"][2]["sigma"]
    # Normalised units: the percentile range is about 100 ADU = 50 photons at 2 ADU each, read noise 3 ADU
    # is about 0.03 (β also holds the shot noise of whatever lies below the 1st percentile).
    assert 40 < photons < 65 and 0.025 < sigma < 0.05
    op = instantiate(OmegaConf.create({"scale": 1, "c": tree}).c)
    clean = np.stack([_clean(s, 192) for s in range(3)])
    degraded = op(torch.from_numpy(clean).float()[:, None], torch.Generator().manual_seed(0))[:, 0].numpy()
    refit = estimate_noise(list(degraded))
    levels = np.array([0.1, 0.4, 0.8])
    expected = levels / photons + sigma**2
    np.testing.assert_allclose(refit.variance(levels), expected, rtol=0.10)


def test_missing_file_exits_2_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "x.yaml"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "nope.tif"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope.tif" in lines[0]
    assert not out.exists()


def _correlated(u: np.ndarray, photons: float, sigma: float, width: float, seed: int) -> np.ndarray:
    from psr.crappifiers import CorrelatedNoise, GaussianNoise, PoissonNoise

    op = CorrelatedNoise([PoissonNoise(photons), GaussianNoise(sigma)], sigma=width)
    x = torch.from_numpy(u).float()[None, None]
    return op(x, torch.Generator().manual_seed(seed))[0, 0].double().numpy()


@pytest.mark.parametrize("width", [0.0, 0.5, 0.7, 1.0])
def test_the_noise_correlation_width_is_measured_from_the_frame_alone(width: float) -> None:
    from psr.metrics.noise import WHITE_SIGMA, correlation_sigma

    measured = np.median([correlation_sigma(_correlated(_clean(s), 50.0, 0.02, width, s)) for s in range(3)])
    if width == 0.0:
        assert measured < WHITE_SIGMA  # white noise reads as (nearly) white
    else:
        assert measured == pytest.approx(width, rel=0.10)
    with pytest.raises(NoiseEstimationError, match="constant"):
        correlation_sigma(np.full((64, 64), 0.5))


def test_correlated_noise_is_calibrated_and_written_as_correlated_noise(tmp_path: Path) -> None:
    """Demosaicked-like noise (width 0.7 px): the white-noise estimate sees only a quarter of the
    variance; corrected for the measured correlation, photons and read noise come back within 10 %, and
    the preset wraps them in CorrelatedNoise of that width."""
    frames = [_correlated(_clean(s), 80.0, 0.03, 0.7, s) for s in range(3)]
    white = estimate_noise(frames)
    assert white.photons > 2.5 * 80.0  # what --correlation none would write
    raw = tmp_path / "raw"
    raw.mkdir()
    for s, frame in enumerate(frames):  # float frames: normalised by their own percentiles on reading
        tifffile.imwrite(raw / f"{s:03d}.tif", frame.astype(np.float32))
    out = tmp_path / "calibrated.yaml"
    _load_script().main([str(raw), "--out", str(out), "--photons", "median"])
    (step,) = yaml.safe_load(out.read_text())["steps"][1:]
    assert step["_target_"] == "psr.crappifiers.CorrelatedNoise" and step["sigma"] == pytest.approx(
        0.7, rel=0.1
    )
    # in the frames' own normalised units (percentiles 1–99.8 of the smoothed frame), photons scale by the
    # normalising span s (photons·s) and read σ by 1/s
    from psr.data.normalise import frame_range

    spans = [float(np.subtract(*frame_range(f[None], [1.0, 99.8], 1.0, "f")[::-1])[0]) for f in frames]
    span = float(np.median(spans))
    photons, sigma = step["steps"][0]["photons"], step["steps"][1]["sigma"]
    assert photons == pytest.approx(80.0 * span, rel=0.10)
    assert sigma == pytest.approx(0.03 / span, rel=0.15)


def test_white_noise_on_cell_sized_structure_reads_below_the_white_threshold() -> None:
    """Structure of 1.5–3 px leaks into neighbouring differences and reads as a little correlation; the
    threshold WHITE_SIGMA sits above what it reaches, so such frames stay white."""
    from psr.metrics.noise import WHITE_SIGMA, correlation_sigma

    rng = np.random.default_rng(0)
    widths = []
    for structure in (1.5, 2.0, 3.0):
        clean = gaussian_filter(rng.random((256, 256)), structure, mode="wrap")
        clean = (clean - clean.min()) / (clean.max() - clean.min())
        widths.append(correlation_sigma(rng.poisson(clean * 40.0) / 40.0))
    assert max(widths) < WHITE_SIGMA
    assert max(widths) > 0.3  # the bias is real: a lower threshold would call these frames correlated
