"""The CARE convention, NRMSE and the MS-SSIM re-export, checked against scikit-image and NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from psr.metrics import care_normalize, fit_affine, ms_ssim, normalize_percentile, nrmse, psnr, ssim


@pytest.mark.parametrize("normalization", ["euclidean", "min-max", "mean"])
def test_nrmse_agrees_with_scikit_image(normalization: str) -> None:
    rng = np.random.default_rng(0)
    target = rng.random((3, 1, 40, 36)) + 0.5
    pred = target + rng.normal(0, 0.1, target.shape)
    ours = nrmse(torch.from_numpy(pred), torch.from_numpy(target), normalization=normalization).numpy()  # type: ignore[arg-type]
    for i in range(3):
        ref = normalized_root_mse(target[i, 0], pred[i, 0], normalization=normalization)
        assert abs(ours[i] - ref) < 1e-6
    fixed = nrmse(torch.from_numpy(pred), torch.from_numpy(target), normalization=2.0).numpy()
    assert fixed == pytest.approx(np.sqrt(((pred - target) ** 2).mean(axis=(1, 2, 3))) / 2.0, rel=1e-5)


def test_care_metrics_agree_with_scikit_image_on_the_normalised_pair() -> None:
    """PSNR / SSIM / NRMSE of the CARE pair equal scikit-image's on the same arrays, data range 1."""
    rng = np.random.default_rng(1)
    gt = rng.gamma(2.0, 50.0, (2, 1, 48, 52))
    pred = 0.01 * gt + rng.normal(0, 0.2, gt.shape) + 3.0  # another intensity scale, plus noise
    fitted, gt_n = care_normalize(torch.from_numpy(pred), torch.from_numpy(gt))
    p, s, e = psnr(fitted, gt_n, 1.0), ssim(fitted, gt_n, 1.0), nrmse(fitted, gt_n, 1.0)
    for i in range(2):
        a, b = gt_n[i, 0].numpy(), fitted[i, 0].numpy()
        assert abs(float(p[i]) - peak_signal_noise_ratio(a, b, data_range=1.0)) < 1e-4
        ref_ssim = structural_similarity(
            a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert abs(float(s[i]) - ref_ssim) < 1e-4
        assert abs(float(e[i]) - np.sqrt(np.mean((a - b) ** 2))) < 1e-4


def test_normalize_percentile_is_csbdeeps_normalize() -> None:
    rng = np.random.default_rng(2)
    x = rng.gamma(1.5, 10.0, (2, 3, 17, 23))
    ours = normalize_percentile(torch.from_numpy(x), 0.1, 99.9).numpy()
    for b in range(2):
        for c in range(3):
            lo, hi = np.percentile(x[b, c], [0.1, 99.9])
            assert np.allclose(ours[b, c], (x[b, c] - lo) / (hi - lo + 1e-20))
    with pytest.raises(ValueError, match="low < high"):
        normalize_percentile(torch.from_numpy(x), 99.0, 1.0)


def test_fit_affine_is_the_least_squares_line() -> None:
    rng = np.random.default_rng(3)
    gt = rng.random((1, 2, 30, 30))
    pred = rng.random((1, 2, 30, 30)) + gt
    fitted = fit_affine(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    for c in range(2):
        alpha, beta = np.polyfit(pred[0, c].ravel(), gt[0, c].ravel(), 1)
        assert np.allclose(fitted[0, c], alpha * pred[0, c] + beta)
    exact = fit_affine(torch.from_numpy(3 * gt - 7), torch.from_numpy(gt)).numpy()
    assert np.allclose(exact, gt)


@pytest.mark.parametrize(("scale", "offset"), [(2.5, -1.0), (1e-3, 40.0), (-0.7, 5.0)])
def test_care_normalisation_makes_psnr_invariant_to_an_affine_change(scale: float, offset: float) -> None:
    gen = torch.Generator().manual_seed(4)
    gt = torch.rand(3, 1, 64, 64, generator=gen, dtype=torch.float64) * 1000
    pred = gt / 1000 + 0.05 * torch.randn(3, 1, 64, 64, generator=gen, dtype=torch.float64)
    base = psnr(*care_normalize(pred, gt), 1.0)
    changed = psnr(*care_normalize(scale * pred + offset, gt), 1.0)
    assert torch.allclose(base, changed, atol=1e-6)
    assert torch.allclose(
        ssim(*care_normalize(pred, gt), 1.0), ssim(*care_normalize(scale * pred + offset, gt), 1.0), atol=1e-5
    )
    assert not torch.allclose(psnr(scale * pred + offset, gt / 1000, 1.0), base, atol=1e-2)  # without it: not


def test_ms_ssim_is_the_losses_ms_ssim_and_one_for_identical_images() -> None:
    from psr.modules import losses

    assert losses.ms_ssim is ms_ssim
    x = torch.rand(2, 1, 176, 180)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2))
    assert (ms_ssim(x + 0.2 * torch.rand_like(x), x) < 1).all()
