import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from psr.metrics import psnr, ssim


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_and_ssim_agree_with_scikit_image(seed: int) -> None:
    rng = np.random.default_rng(seed)
    target = rng.random((3, 1, 48, 40))
    pred = target + rng.normal(0, 0.1 * (seed + 1), target.shape)
    data_range = 1.0
    ours_psnr = psnr(torch.from_numpy(pred), torch.from_numpy(target), data_range=data_range).numpy()
    ours_ssim = ssim(torch.from_numpy(pred), torch.from_numpy(target), data_range=data_range).numpy()
    for i in range(target.shape[0]):
        ref_psnr = peak_signal_noise_ratio(target[i, 0], pred[i, 0], data_range=data_range)
        ref_ssim = structural_similarity(
            target[i, 0],
            pred[i, 0],
            data_range=data_range,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert abs(ours_psnr[i] - ref_psnr) < 1e-4
        assert abs(ours_ssim[i] - ref_ssim) < 1e-4


def test_ssim_3d_and_default_range() -> None:
    rng = np.random.default_rng(3)
    target = rng.random((1, 1, 16, 24, 24)) * 5
    pred = target + rng.normal(0, 0.3, target.shape)
    ours = float(ssim(torch.from_numpy(pred), torch.from_numpy(target))[0])
    ref = structural_similarity(
        target[0, 0],
        pred[0, 0],
        data_range=float(target.max() - target.min()),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert abs(ours - ref) < 1e-4


def test_identical_images_are_perfect_and_shapes_are_checked() -> None:
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert (psnr(x, x) > 150).all()
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(x, x[..., :16])
    with pytest.raises(ValueError, match="at least 11"):
        ssim(x[..., :8, :8], x[..., :8, :8])
