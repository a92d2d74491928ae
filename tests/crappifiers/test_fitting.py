"""Fitting a crappifier to real pairs: the distance, recovery of a known photon budget, the YAML writer, the CLI."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from psr.calibration.fitting import (
    FitCrops,
    FitError,
    PairSource,
    ParamSpec,
    crop_pair,
    default_params,
    distance,
    fit,
    get_key,
    load_preset,
    numeric_keys,
    parse_param,
    read_pairs,
    residual_stats,
    set_keys,
    stats_distance,
    write_preset,
)
from psr.crappifiers import Chain, GaussianBlur, GaussianNoise
from psr.crappifiers.base import Crappifier
from psr.data.normalise import normalise_percentile
from psr.data.phantoms import PhantomSpec, render_phantom
from tests.conftest import CONF, ROOT, SHARED_DATA

SCRIPT = ROOT / "scripts" / "fit_crappifier.py"


@functools.cache
def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fit_crappifier", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(tree: dict[str, Any]) -> Crappifier:
    """The script's builder: Hydra instantiates the tree with ``${scale}`` = 1."""
    return _load_script().build_crappifier(tree)


def _phantom(index: int, size: int = 128) -> np.ndarray:
    return render_phantom(7, index, PhantomSpec(size=size)).astype(np.float32)


def _normalised(high: np.ndarray) -> np.ndarray:
    return normalise_percentile(torch.from_numpy(high)[None, None], 1.0, 99.8)[0, 0].float().numpy()


def _noisy_pair(index: int, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A phantom and its twin with Gaussian noise σ (in normalised units) and a different intensity scale."""
    high = _phantom(index)
    rng = np.random.default_rng(seed)
    low = _normalised(high) + rng.normal(0.0, sigma, high.shape).astype(np.float32)
    return 40.0 * low + 3.0, high


@pytest.fixture(scope="module")
def gaussian_pairs() -> list[FitCrops]:
    return [crop_pair(f"p{i}", *_noisy_pair(i, 0.05, seed=i), crop=128, n_crops=2, seed=i) for i in range(2)]


def test_stats_distance_is_zero_for_identical_and_scale_invariant_terms() -> None:
    r = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    real = residual_stats(r)
    assert stats_distance(real, real) == (0.0, 0.0)
    # A residual scaled by k: the histogram term is |k − 1|, the spectrum term |ln k| (comparable terms).
    for k in (0.5, 1.5, 3.0):
        hist, spectrum = stats_distance(residual_stats(k * r), real)
        assert hist == pytest.approx(abs(k - 1), rel=1e-3)
        assert spectrum == pytest.approx(abs(np.log(k)), rel=1e-3)


def test_distance_small_for_matching_noise_and_grows_with_mismatch(gaussian_pairs: list[FitCrops]) -> None:
    def d(op: Crappifier) -> float:
        return distance(op, gaussian_pairs, seed=1).total

    matched = d(GaussianNoise(sigma=0.05))
    sigmas = [d(GaussianNoise(sigma=s)) for s in (0.07, 0.1, 0.2)]
    # What is left at the true σ is the sampling noise of two finite residual samples.
    assert matched < 0.1
    assert 4 * matched < sigmas[0] < sigmas[1] < sigmas[2]
    assert d(GaussianNoise(sigma=0.035)) > 4 * matched
    # Right noise level, wrong correlation: a blur before the noise shows in the spectrum term.
    blurred = distance(Chain([GaussianBlur(sigma=1.5), GaussianNoise(sigma=0.05)]), gaussian_pairs, seed=1)
    assert blurred.spectrum > 4 * distance(GaussianNoise(sigma=0.05), gaussian_pairs, seed=1).spectrum
    assert set(blurred.per_pair) == {"p0", "p1"}


def test_fit_recovers_a_known_photon_budget() -> None:
    photons = 50.0
    pairs = []
    for i in range(3):
        high = _phantom(i)
        rng = np.random.default_rng(100 + i)
        low = rng.poisson(np.clip(_normalised(high), 0, None) * photons) / photons
        pairs.append(crop_pair(f"p{i}", (5.0 * low + 2.0).astype(np.float32), high, 128, 1, seed=i))
    tree, _ = load_preset(CONF / "crappifier" / "poisson.yaml")
    params = [parse_param("steps.1.photons=5:500:log", tree, "poisson.yaml")]
    result = fit(tree, params, pairs, _build, n_trials=30, seed=0)
    fitted = result.values["steps.1.photons"]
    assert abs(fitted / photons - 1) < 0.25, fitted
    assert result.after.total < result.before.total
    assert get_key(result.tree, "steps.1.photons") == fitted
    assert get_key(result.tree, "steps.0.factor") == "${scale}"
    assert len(result.history) == 30


def test_written_yaml_instantiates_at_any_scale(tmp_path: Path) -> None:
    tree, _ = load_preset(CONF / "crappifier" / "csbdeep.yaml")
    fitted = set_keys(tree, {"steps.1.photons": 12.5, "steps.2.sigma": 0.02, "steps.0.sigma": 0.7})
    assert get_key(tree, "steps.1.photons") == [10.0, 100.0]  # the preset itself is unchanged
    out = write_preset(
        tmp_path / "fitted_test.yaml", fitted, ["Fitted on: nothing real", "distance 1 -> 0.5"]
    )
    text = out.read_text()
    assert text.startswith("# Fitted on: nothing real\n# distance 1 -> 0.5\n")
    assert "${scale}" in text and "photons: 12.5" in text
    assert [p.name for p in tmp_path.iterdir()] == ["fitted_test.yaml"]  # no temporary file left
    for scale in (1, 2, 4):
        cfg = OmegaConf.create({"scale": scale, "crappifier": OmegaConf.load(out)})
        op = instantiate(cfg.crappifier)
        assert op.scale == scale
        assert op.steps[1].photons.low == op.steps[1].photons.high == 12.5
        y = op(torch.rand(2, 1, 32, 32), torch.Generator().manual_seed(0))
        assert y.shape == (2, 1, 32 // scale, 32 // scale)


def test_default_params_and_key_errors() -> None:
    def keys(name: str) -> list[str]:
        return [p.key for p in default_params(load_preset(CONF / "crappifier" / f"{name}.yaml")[0])]

    assert keys("poisson") == ["steps.1.photons"]
    assert keys("gaussian") == ["steps.1.sigma"]
    assert keys("camera") == ["steps.2.photons", "steps.2.read_noise"]
    assert keys("csbdeep") == ["steps.0.sigma", "steps.1.photons", "steps.2.sigma"]
    assert keys("none") == []
    assert keys("calibrated_w2s") == ["steps.1.photons", "steps.2.sigma"]  # shot + read noise
    pedestal = {
        "_target_": "psr.crappifiers.Chain",
        "steps": [
            {"_target_": "psr.crappifiers.Background", "offset": 0.05, "gradient": 0.0},
            {"_target_": "psr.crappifiers.PoissonNoise", "photons": 20.0},
            {"_target_": "psr.crappifiers.GaussianNoise", "sigma": 0.01},
        ],
    }
    assert [p.key for p in default_params(pedestal)] == ["steps.0.offset", "steps.1.photons", "steps.2.sigma"]
    tree, _ = load_preset(CONF / "crappifier" / "poisson.yaml")
    assert numeric_keys(tree) == ["steps.1.photons"]  # ${scale} and booleans are not parameters
    assert parse_param("steps.1.photons", tree, "p") == ParamSpec("steps.1.photons", 1.0, 2000.0, True)
    with pytest.raises(FitError, match=r"steps\.5\.photons is not a key of p; its numeric keys are"):
        parse_param("steps.5.photons=1:10", tree, "p")
    with pytest.raises(FitError, match="has 'area' at steps.0.mode"):
        parse_param("steps.0.mode=1:2", tree, "p")
    with pytest.raises(FitError, match="malformed"):
        parse_param("steps.1.photons=1-10", tree, "p")
    with pytest.raises(FitError, match="log bounds need LOW > 0"):
        parse_param("steps.1.photons=0:10:log", tree, "p")
    with pytest.raises(FitError, match=r"steps\.1\.photons=0 is invalid: PoissonNoise photons must be > 0"):
        fit(tree, [ParamSpec("steps.1.photons", 0.0, 10.0)], [], _build, source="p")


def test_read_pairs_rejects_shape_mismatch(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "low.tif", np.zeros((32, 32), np.uint16))
    tifffile.imwrite(tmp_path / "high.tif", np.zeros((32, 48), np.uint16))
    source = PairSource([str(tmp_path / "low.tif")], [str(tmp_path / "high.tif")])
    with pytest.raises(FitError, match=r"has shape \[32, 32\] but the high image .*high.tif has \[32, 48\]"):
        list(read_pairs(source))


def test_cli_writes_a_fitted_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    high = _phantom(0, size=96)
    rng = np.random.default_rng(0)
    low = rng.poisson(np.clip(_normalised(high), 0, None) * 30.0).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a_low.tif", low)
    tifffile.imwrite(tmp_path / "a_high.tif", high.astype(np.uint16))
    out = tmp_path / "conf" / "fitted_demo.yaml"
    argv = [
        "--preset",
        "gaussian",
        "--low",
        str(tmp_path / "a_low.tif"),
        "--high",
        str(tmp_path / "a_high.tif"),
    ]
    argv += [
        "--n-trials",
        "4",
        "--crop",
        "64",
        "--crops",
        "2",
        "--spread",
        "0.2",
        "--quiet",
        "--out",
        str(out),
    ]
    _load_script().main(argv)
    assert "use it as crappifier=fitted_demo" in capsys.readouterr().out
    text = out.read_text()
    assert "# Fitted by scripts/fit_crappifier.py from conf/crappifier/gaussian.yaml" in text.replace(
        "\n# ", " "
    )
    assert "--n-trials 4" in text and "preset " in text and "-> fitted" in text.replace("\n# ", " ")
    tree = yaml.safe_load(text)
    sigma = get_key(tree, "steps.1.sigma")
    assert isinstance(sigma, list) and 0 < sigma[0] < sigma[1]  # --spread writes a range
    assert get_key(tree, "steps.0.factor") == "${scale}"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("case", ["shape", "key", "missing"])
def test_cli_bad_input_is_one_error_exit_2_nothing_written(tmp_path: Path, case: str) -> None:
    tifffile.imwrite(tmp_path / "low.tif", np.zeros((32, 32), np.uint16))
    tifffile.imwrite(tmp_path / "high.tif", np.zeros((32, 48 if case == "shape" else 32), np.uint16))
    low = str(tmp_path / ("nope.tif" if case == "missing" else "low.tif"))
    out = tmp_path / "fitted.yaml"
    extra = ["--params", "steps.7.photons=1:10"] if case == "key" else []
    done = _cli(
        "--preset", "poisson", "--low", low, "--high", str(tmp_path / "high.tif"), "--out", str(out), *extra
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    expected = {
        "shape": "same pixel grid",
        "key": "steps.7.photons is not a key",
        "missing": "nope.tif does not exist",
    }
    assert expected[case] in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["high.tif", "low.tif"]


@pytest.mark.realdata
def test_real_w2s_pair_prefers_a_low_photon_budget() -> None:
    folder = SHARED_DATA / "pairs" / "w2s_sim_example"
    low, high = folder / "input_avg1_010_0.tif", folder / "target_avg400_010_0.tif"
    if not (low.is_file() and high.is_file()):
        pytest.skip(f"the W2S example pair is not in {folder}")
    source = PairSource([str(low)], [str(high)])
    (name, lo, hi), *_ = list(read_pairs(source))
    pairs = [crop_pair(name, lo, hi, 128, 4, seed=0)]
    tree, _ = load_preset(CONF / "crappifier" / "poisson.yaml")
    # A single widefield frame against the mean of 400: far fewer photons than the preset's 20-200.
    dim = distance(_build(set_keys(tree, {"steps.1.photons": 8.0})), pairs).total
    bright = distance(_build(set_keys(tree, {"steps.1.photons": 200.0})), pairs).total
    assert dim < 0.3 < bright


def test_the_operators_package_reads_no_images() -> None:
    # Importing the operators loads none of psr.data's image readers (the fitting lives in psr.calibration).
    code = "import sys, psr.crappifiers; print('psr.data.pairs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
