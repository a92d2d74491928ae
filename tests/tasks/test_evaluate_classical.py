"""Classical denoising baselines (psr.inference.classical) and their place in evaluate.py: the same numbers
as the libraries called directly, the Gaussian width chosen on the set, the rows, summary and table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy.ndimage import gaussian_filter
from skimage.restoration import denoise_nl_means, estimate_sigma

from psr.inference import classical
from psr.inference.checkpoint import load_checkpoint
from psr.metrics.scores import restoration_scores
from psr.tasks.errors import ConfigError
from psr.tasks.evaluate import _pair_items, baselines, evaluate, predict_image
from tests.conftest import SHARED_DATA
from tests.tasks import test_evaluate as base
from tests.tasks.test_evaluate import _noisy, _read_rows, _scene

# The tiny scale-1 checkpoint and the config composer of the evaluation tests, as fixtures here too.
ckpt_x1 = base.ckpt_x1
compose_eval = base.compose_eval

bm3d = pytest.importorskip("bm3d")
GRID = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]


def _smooth_noisy(
    seed: int, shape: tuple[int, int] = (48, 48), noise: float = 0.15
) -> tuple[np.ndarray, ...]:
    """``(low, high)`` ``(1, Y, X)``: a smooth image (structures of about 6 px) and it with white noise."""
    rng = np.random.default_rng(seed)
    clean = gaussian_filter(rng.random(shape), 3.0, mode="wrap")
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    low = clean + rng.normal(0, noise, shape)
    return low[None].astype(np.float32), clean[None].astype(np.float32)


def test_the_baselines_are_the_libraries_called_directly() -> None:
    low, _ = _smooth_noisy(0, (24, 28))
    image = np.concatenate([low, low[:, ::-1] * 0.5])  # (2, Y, X): each channel plane on its own
    got = {
        "gaussian": classical.gaussian(image, 1.75),
        "nlm": classical.nlm(image, noise="white"),
        "bm3d": classical.bm3d_denoise(image, noise="white"),
    }
    for c, plane in enumerate(image):
        sigma = estimate_sigma(plane)
        expected = {
            "gaussian": gaussian_filter(plane, 1.75, mode="reflect"),
            "nlm": denoise_nl_means(
                plane, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6
            ),
            "bm3d": bm3d.bm3d(plane, sigma_psd=sigma),
        }
        for name, value in got.items():
            assert value.shape == image.shape and value.dtype == np.float32
            np.testing.assert_allclose(value[c], expected[name], atol=1e-6, err_msg=name)
    # evaluate's baselines(): the same, on the (1, C, Y, X) input, beside the identity
    shown = baselines(
        torch.from_numpy(image)[None], 2, image.shape[1:], 1, ["gaussian", "nlm"], 1.75, None, "white"
    )
    assert list(shown) == ["identity", "gaussian", "nlm"]
    np.testing.assert_allclose(shown["nlm"][0].numpy(), got["nlm"], atol=1e-6)
    np.testing.assert_allclose(shown["gaussian"][0].numpy(), classical.gaussian(image, 1.75), atol=1e-6)


def _photon_limited(seed: int, photons: float = 10.0, read: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` ``(1, 96, 96)``: smooth structures and their Poisson–Gaussian raw frame."""
    rng = np.random.default_rng(seed)
    clean = gaussian_filter(rng.random((96, 96)), 3.0, mode="wrap")
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    low = rng.poisson(clean * photons) / photons + rng.normal(0, read, clean.shape)
    return low[None].astype(np.float32), clean[None].astype(np.float32)


def test_variance_stabilised_baselines_are_the_white_noise_denoisers_in_anscombe_space() -> None:
    low, high = _photon_limited(1)
    plane = low[0].astype(np.float64)
    alpha, beta = classical.poisson_gaussian(plane)
    assert 0.05 < alpha < 0.15  # 10 photons at intensity 1: α = 0.1, blindly, within 50 %
    stable = classical.anscombe(plane, alpha, beta)
    # the inverse is the algebraic one plus the asymptotic bias correction (+α/4) wherever the root is real
    real = alpha * plane + 0.375 * alpha**2 + beta > 0
    back = classical.inverse_anscombe(stable, alpha, beta)
    np.testing.assert_allclose(back[real], plane[real] + alpha / 4, atol=1e-9)
    # the denoisers see the plane as given (float32 here), so the expectation follows the same arithmetic;
    # BM3D's block matching still flips a few matches on last-bit differences (its native code's thread
    # count differs within a long test session): ~1e-4 on 1 % of the pixels, far below what another
    # transform or noise level would change
    given = low[0]
    a32, b32 = classical.poisson_gaussian(given)
    stable32 = classical.anscombe(given, a32, b32)
    expected = classical.inverse_anscombe(bm3d.bm3d(stable32, sigma_psd=1.0), a32, b32)
    got = classical.bm3d_denoise(low)[0]
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert float(np.mean(np.abs(got - expected))) < 1e-5
    expected = classical.inverse_anscombe(
        denoise_nl_means(stable32, h=0.8, sigma=1.0, fast_mode=True, patch_size=5, patch_distance=6),
        a32,
        b32,
    )
    np.testing.assert_allclose(classical.nlm(low)[0], expected, atol=1e-5)
    # On photon-limited noise the stabilised denoisers beat those given the white-noise estimate (here by
    # about 0.5 dB; by 3–10 dB on the real W2S frames, whose white estimate is 2–3× too low).
    target = torch.from_numpy(high)[None]

    def score(x: np.ndarray) -> float:
        return float(classical.care_psnr(torch.from_numpy(x)[None], target)[0])

    assert score(classical.bm3d_denoise(low)) > score(classical.bm3d_denoise(low, noise="white")) + 0.25
    assert score(classical.nlm(low)) > score(classical.nlm(low, noise="white")) + 0.25


def test_gaussian_sigma_is_the_grid_value_with_the_best_mean_psnr() -> None:
    pairs = [_smooth_noisy(seed) for seed in range(3)]
    best, means = classical.select_gaussian_sigma(pairs, GRID)
    assert list(means) == GRID
    assert all(means[best] >= v for v in means.values())
    assert 1.5 <= best <= 2.5  # noise 0.15 on 6-px structures: neither the narrowest nor the widest filter
    # the selection's PSNR is the evaluation's: restoration_scores on the same candidates
    for sigma in (best, GRID[0], GRID[-1]):
        psnrs = [
            restoration_scores(
                {"g": torch.from_numpy(classical.gaussian(low, sigma))[None]}, torch.from_numpy(high)[None]
            )[0]["g"]["psnr"]
            for low, high in pairs
        ]
        assert np.mean(psnrs) == pytest.approx(means[sigma], abs=1e-9)
    # without noise no smoothing helps: the narrowest filter wins
    clean = [(high, high) for _, high in pairs]
    assert classical.select_gaussian_sigma(clean, GRID)[0] == GRID[0]


def test_tta_is_the_mean_over_flips_and_rotations_whole_and_tiled() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1).eval()
    x = torch.rand(1, 1, 20, 20)
    expected = torch.zeros_like(x)
    for flip in (False, True):
        for k in range(4):
            y = x.flip(-1) if flip else x
            out = torch.rot90(net(torch.rot90(y, k, (-2, -1))), -k, (-2, -1))
            expected += (out.flip(-1) if flip else out).detach() / 8
    cpu = torch.device("cpu")
    whole = predict_image(net, x, 1, 1, None, 0, 1, cpu, tta=True)
    tiled = predict_image(net, x, 1, 1, 12, 4, 2, cpu, tta=True)
    assert torch.allclose(whole, expected, atol=1e-6) and torch.allclose(tiled, expected, atol=1e-5)
    assert not torch.allclose(predict_image(net, x, 1, 1, None, 0, 1, cpu), expected, atol=1e-4)


def test_evaluate_scores_the_classical_denoisers_beside_the_model(
    compose_eval, ckpt_x1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    for i in range(2):
        clean = _scene((40, 44), 20 + i)
        tifffile.imwrite(tmp_path / f"low_{i}.tif", _noisy(clean, i).astype(np.float32))
        tifffile.imwrite(tmp_path / f"high_{i}.tif", (clean * 900).astype(np.uint16))
    summary = evaluate(
        compose_eval(
            f"ckpt={ckpt_x1}",
            "data=pairs",
            f"pairs.low={tmp_path}/low_*.tif",
            f"pairs.high={tmp_path}/high_*.tif",
            "gaussian_sigmas=[0.5,1,2,3]",
            "tta=true",
        )
    )
    run = tmp_path / "eval"
    rows = _read_rows(run)
    expected = {"model", "identity", "gaussian", "nlm", "bm3d", "ground_truth"}
    assert {r["method"] for r in rows} == expected and len(rows) == 2 * len(expected)
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["gaussian_sigma"] == summary["gaussian_sigma"] in (0.5, 1.0, 2.0, 3.0)
    assert set(on_disk["gaussian_sigma_psnr"]) == {"0.5", "1", "2", "3"} and on_disk["tta"] is True
    assert on_disk["classical"] == ["gaussian", "nlm", "bm3d"]
    assert on_disk["gain_db"].keys() == {"identity", "gaussian", "nlm", "bm3d"}
    by_method = {m["method"]: m for m in on_disk["methods"]}
    assert by_method["gaussian"]["sigma"] == summary["gaussian_sigma"]
    assert by_method["gaussian"]["psnr"] == pytest.approx(
        on_disk["gaussian_sigma_psnr"][f"{summary['gaussian_sigma']:g}"], abs=1e-6
    )
    for method in ("gaussian", "nlm", "bm3d"):  # smoothing noisy smooth images beats the raw input
        assert by_method[method]["psnr"] > by_method["identity"]["psnr"], method
    assert set(on_disk["baseline_time_s"]) == {"gaussian_sigma_selection", "gaussian", "nlm", "bm3d"}
    assert len(list((run / "figures").glob("*.png"))) == 2
    out = capsys.readouterr().out
    assert f"| gaussian (σ {summary['gaussian_sigma']:.2f}) |" in out and "| bm3d |" in out

    # classical=[]: the identity alone, as before
    again = evaluate(
        compose_eval(
            f"ckpt={ckpt_x1}",
            "data=pairs",
            f"pairs.low={tmp_path}/low_0.tif",
            f"pairs.high={tmp_path}/high_0.tif",
            "classical=[]",
            "figures=false",
        )
    )
    assert [m["method"] for m in again["methods"]] == ["model", "identity", "ground_truth"]
    assert again["gaussian_sigma"] is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("classical=[gaussian,wiener]", r"wiener is not a classical denoiser; expected a list of gaussian"),
        ("gaussian_sigmas=[]", r"gaussian_sigmas=\[\]: the Gaussian baseline needs a non-empty list"),
        (
            "classical=[bm3d]",
            r"needs the bm3d package, which is not installed: pip install 'psr\[classical\]'",
        ),
    ],
)
def test_bad_classical_settings_are_one_clear_error(
    compose_eval, ckpt_x1: Path, tmp_path: Path, monkeypatch, override: str, message: str
) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "bm3d", None)  # as if bm3d were not installed
    low, high = _smooth_noisy(5, (24, 24))
    tifffile.imwrite(tmp_path / "low.tif", low[0])
    tifffile.imwrite(tmp_path / "high.tif", high[0])
    cfg = compose_eval(
        f"ckpt={ckpt_x1}",
        "data=pairs",
        f"pairs.low={tmp_path}/low.tif",
        f"pairs.high={tmp_path}/high.tif",
        override,
    )
    with pytest.raises(ConfigError, match=message):
        evaluate(cfg)
    assert not (tmp_path / "eval" / "summary.json").exists()
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'psr\[classical\]'"):
        classical.bm3d_denoise(low)


@pytest.mark.realdata
def test_ready_made_w2s_dev_and_widefield_fmd_sets(compose_eval, ckpt_x1: Path) -> None:  # noqa: ANN001
    w2s = SHARED_DATA / "pairs" / "w2s_dev"
    fmd = SHARED_DATA / "pairs" / "fmd" / "widefield_bpae_rgb"
    if not (w2s.is_dir() and fmd.is_dir()):
        pytest.skip(f"the W2S / FMD pairs are not in {SHARED_DATA / 'pairs'}")
    model = load_checkpoint(str(ckpt_x1), device=torch.device("cpu"))
    count, _, unmatched = _pair_items(compose_eval(f"ckpt={ckpt_x1}", "data=w2s_dev"), model)
    assert count == 30 and unmatched == []
    count, items, _ = _pair_items(compose_eval(f"ckpt={ckpt_x1}", "data=widefield_fmd"), model)
    images = list(items())
    assert count == len(images) == 3  # the RGB composite: one image per colour channel
    assert all(i.low.shape == i.high.shape == (1, 1, 512, 512) for i in images)
    assert len({float(i.high.float().mean()) for i in images}) == 3


def test_correlated_noise_is_given_to_the_classical_denoisers_at_its_whole_level() -> None:
    """A colour camera's correlated noise (width 0.7 px) hides three quarters of its variance from the
    white-noise estimate; the baselines' noise model measures the correlation and restores it."""
    from psr.crappifiers import CorrelatedNoise, PoissonNoise

    rng = np.random.default_rng(4)
    clean = gaussian_filter(rng.random((256, 256)), 8.0, mode="wrap")
    clean = 0.2 + 0.6 * (clean - clean.min()) / (clean.max() - clean.min())
    op = CorrelatedNoise([PoissonNoise(40.0)], sigma=0.7)
    plane = op(torch.from_numpy(clean).float()[None, None], torch.Generator().manual_seed(0))[0, 0].numpy()
    assert classical.noise_correlation(plane) == pytest.approx(0.7, rel=0.1)
    alpha, _ = classical.poisson_gaussian(plane)
    assert alpha == pytest.approx(1 / 40, rel=0.2)  # white-noise reading: about a quarter of it
    white = np.random.default_rng(5).poisson(clean * 40.0) / 40.0
    assert classical.noise_correlation(white) == 0.0  # white noise: no correction


def test_bm3d_is_given_correlated_noise_as_its_spectrum() -> None:
    """BM3D's coloured-noise mode with the measured width: the ``bm3d`` package called directly with
    ``correlated_psd``, better than the same level given as white noise, and numpy left as it was."""
    import bm4d

    from psr.crappifiers import CorrelatedNoise, PoissonNoise

    shape = (96, 80)
    white = classical.correlated_psd(shape, 0.5, 0.0)
    np.testing.assert_allclose(white, 0.25 * 96 * 80)  # white noise: bm3d's own σ² · Y · X
    psd = classical.correlated_psd(shape, 0.5, 0.7)
    assert psd.mean() == pytest.approx(0.25 * 96 * 80, rel=1e-6)  # unit-energy taps keep the variance
    assert psd[0, 0] > 3 * psd[48, 40]  # … and move it to low frequencies

    rng = np.random.default_rng(4)
    clean = gaussian_filter(rng.random((128, 128)), 3.0, mode="wrap")
    clean = 0.2 + 0.6 * (clean - clean.min()) / (clean.max() - clean.min())
    op = CorrelatedNoise([PoissonNoise(40.0)], sigma=0.7)
    plane = op(torch.from_numpy(clean).float()[None, None], torch.Generator().manual_seed(0))[0, 0].numpy()
    width = classical.noise_correlation(plane)
    assert width == pytest.approx(0.7, rel=0.1)
    alpha, beta = classical.poisson_gaussian(plane, width)
    stable = classical.anscombe(plane, alpha, beta)
    numpy = bm4d.np
    got = classical.bm3d_denoise(plane[None])[0]
    assert bm4d.np is numpy
    as_white = classical.inverse_anscombe(bm3d.bm3d(stable, sigma_psd=1.0), alpha, beta)
    target = torch.from_numpy(clean)[None, None]

    def score(x: np.ndarray) -> float:
        return float(classical.care_psnr(torch.from_numpy(np.asarray(x))[None, None], target)[0])

    assert score(got) > score(as_white) + 0.5  # measured: +1.7 dB
    with classical._bm4d_numpy():
        direct = bm3d.bm3d(stable, sigma_psd=classical.correlated_psd(stable.shape, 1.0, width))
    expected = classical.inverse_anscombe(direct, alpha, beta)
    assert float(np.mean(np.abs(got - expected))) < 1e-4
