"""Contract tests over every ``conf/loss`` and ``conf/gan_loss`` config, and each loss's own promises."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from scipy.ndimage import gaussian_filter

from psr.metrics.image import ssim
from psr.modules.losses import (
    MS_SSIM_WEIGHTS,
    CharbonnierLoss,
    FFTLoss,
    GANLoss,
    PerceptualLoss,
    SSIML1Loss,
    ms_ssim,
)
from tests.conftest import config_names


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads, and lose a lot when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _loss_from_config(compose_cfg, name: str) -> torch.nn.Module:  # noqa: ANN001
    cfg = compose_cfg(f"loss={name}")
    if "random_weights" in cfg.loss:
        cfg.loss.random_weights = True  # no ImageNet weights offline; random features suffice here
    return instantiate(cfg.loss)


@pytest.mark.parametrize("name", config_names("loss"))
@pytest.mark.parametrize(
    "shape", [(2, 1, 32, 32), (2, 3, 32, 32), (1, 1, 12, 24, 24)], ids=["2d", "2d-3ch", "3d"]
)
def test_loss_contract(compose_cfg, name: str, shape: tuple[int, ...]) -> None:  # noqa: ANN001
    loss_fn = _loss_from_config(compose_cfg, name)
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(shape, generator=gen)
    pred = (target + 0.1 * torch.randn(shape, generator=gen)).requires_grad_()
    same = loss_fn(target, target.clone())
    loss = loss_fn(pred, target)
    assert loss.dim() == 0 and torch.isfinite(loss.detach())
    assert 0 <= float(same) <= 1e-3 + 1e-6  # zero, or Charbonnier's eps
    assert float(loss.detach()) > float(same)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_charbonnier_is_l1_for_large_errors() -> None:
    loss = CharbonnierLoss(eps=1e-3)
    target = torch.zeros(1, 1, 4, 4)
    pred = torch.full_like(target, 5.0)
    pred[..., :2, :] = -3.0
    assert float(loss(pred, target)) == pytest.approx(float(F.l1_loss(pred, target)), rel=1e-6)
    assert float(loss(target, target)) == pytest.approx(1e-3)


def test_ssim_metric_is_differentiable_in_float32() -> None:
    target = torch.rand(2, 1, 16, 16)
    pred = (target + 0.1).requires_grad_()
    ssim(pred, target).sum().backward()
    assert pred.grad is not None and pred.grad.dtype == torch.float32
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("data_range", [1.0, None])
def test_ssim_l1_mixes_single_scale_ssim_and_l1_on_small_patches(data_range: float | None) -> None:
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(2, 2, 16, 20, generator=gen)
    pred = target + 0.2 * torch.randn(target.shape, generator=gen)
    expected = (
        0.84 * (1 - ssim(pred, target, data_range=data_range).mean()) + 0.16 * (pred - target).abs().mean()
    )
    got = SSIML1Loss(alpha=0.84, data_range=data_range)(pred, target)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def _ms_ssim_reference(pred: np.ndarray, target: np.ndarray) -> float:
    """MS-SSIM of two 2D images with scipy, written out from Wang et al. (2003), data range 1."""
    c1, c2 = 0.01**2, 0.03**2
    n = 1
    while n < 5 and min(pred.shape) >= 11 * 2**n:
        n += 1
    weights = np.array(MS_SSIM_WEIGHTS[:n]) / sum(MS_SSIM_WEIGHTS[:n])
    result = 1.0
    x, y = pred, target
    for k in range(n):

        def blur(a: np.ndarray) -> np.ndarray:
            return gaussian_filter(a, sigma=1.5, truncate=3.5)[5:-5, 5:-5]

        mx, my = blur(x), blur(y)
        vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        cs = (2 * cov + c2) / (vx + vy + c2)
        lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
        term = (lum * cs).mean() if k == n - 1 else cs.mean()
        result *= term ** weights[k]
        h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
        y = y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    return float(result)


@pytest.mark.parametrize("size", [(32, 32), (45, 50), (64, 64)])
def test_ms_ssim_matches_a_written_out_reference(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    target = rng.random(size)
    pred = np.clip(target + rng.normal(0, 0.15, size), 0, 1)
    ours = float(ms_ssim(torch.from_numpy(pred)[None, None], torch.from_numpy(target)[None, None])[0])
    assert ours == pytest.approx(_ms_ssim_reference(pred, target), abs=1e-5)


def test_ms_ssim_is_one_for_identical_and_finite_when_anticorrelated() -> None:
    target = torch.rand(2, 1, 64, 64)
    assert torch.allclose(ms_ssim(target, target), torch.ones(2))
    pred = (1 - target).requires_grad_()
    loss = SSIML1Loss()(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and pred.grad is not None and torch.isfinite(pred.grad).all()


def test_fft_loss_sees_a_lost_spot_that_l1_barely_sees() -> None:
    loss = FFTLoss(weight=1.0, pixel_weight=0.0)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    target = torch.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 12.0**2))[None, None]
    assert float(loss(target, target.clone())) == 0.0
    # Two changes with the same pixel L1: a single bright spot, and a smooth broad dimming.
    spot = torch.zeros_like(target)
    spot[..., 10, 50] = 1.0
    smooth = torch.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 16.0**2))[None, None]
    smooth = smooth * spot.sum() / smooth.sum()
    assert float(F.l1_loss(target + spot, target)) == pytest.approx(
        float(F.l1_loss(target + smooth, target)), rel=1e-5
    )
    assert float(F.l1_loss(target + spot, target)) < 1e-3
    assert float(loss(target + spot, target)) > 20 * float(loss(target + smooth, target))
    # Complex values, not magnitudes: a shifted image has the same magnitude spectrum but is penalised.
    shifted = torch.roll(target, shifts=5, dims=-1)
    assert torch.allclose(torch.fft.rfft2(shifted).abs(), torch.fft.rfft2(target).abs(), atol=1e-4)
    assert float(loss(shifted, target)) > 1e-3


def test_fft_loss_adds_pixel_l1() -> None:
    target = torch.rand(2, 1, 16, 16)
    pred = target + 0.3 * torch.rand(2, 1, 16, 16)
    both = FFTLoss(weight=1.0, pixel_weight=2.0)(pred, target)
    assert float(both) == pytest.approx(
        float(FFTLoss()(pred, target) + 2 * F.l1_loss(pred, target)), rel=1e-6
    )


def test_perceptual_loss_without_weights_explains_where_to_put_them(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    loss = PerceptualLoss()  # building works offline: the weights are read on first use
    x = torch.rand(1, 1, 32, 32)
    expected = str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth")
    for call in (loss.resolve_weights, lambda: loss(x, x)):
        with pytest.raises(FileNotFoundError) as err:
            call()
        assert expected in str(err.value)
        assert "torchvision.models.vgg19(weights='IMAGENET1K_V1')" in str(err.value)
    with pytest.raises(FileNotFoundError, match="weights_path=/no/such/vgg19.pth does not exist"):
        PerceptualLoss(weights_path="/no/such/vgg19.pth")(x, x)


def test_perceptual_loss_reads_a_local_weights_file(tmp_path: Path) -> None:
    random = PerceptualLoss(layers=["relu1_2"], random_weights=True)
    x, y = torch.rand(2, 1, 24, 24), torch.rand(2, 1, 24, 24)
    expected = random(x, y)
    features = random._vgg[0]
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    from_file = PerceptualLoss(layers={"relu1_2": 1.0}, weights_path=str(path))
    assert from_file.resolve_weights() == path
    assert torch.allclose(from_file(x, y), expected)
    torch.save({"classifier.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a torchvision VGG19 state dict"):
        PerceptualLoss(layers=["relu1_2"], weights_path=path)(x, y)


def test_perceptual_loss_treats_channels_as_grey_images_and_stays_out_of_checkpoints() -> None:
    loss = PerceptualLoss(layers=["conv2_1"], random_weights=True, weight=2.0)
    x, y = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    per_channel = torch.stack([loss(x[:, [c]], y[:, [c]]) for c in range(3)])
    assert torch.allclose(loss(x, y), per_channel.mean(), rtol=1e-5)
    assert loss.state_dict() == {} and list(loss.parameters()) == []
    with pytest.raises(ValueError, match="not VGG19 layers"):
        PerceptualLoss(layers=["relu9_9"])


# Hand-computed on real logits (2, −1) and fake logits (0.5, −3); softplus(z) = log(1 + e^z).
def _softplus(z: float) -> float:
    return math.log1p(math.exp(z))


REAL, FAKE = [2.0, -1.0], [0.5, -3.0]
EXPECTED = {
    "vanilla": {
        "d": (_softplus(-2) + _softplus(1)) / 2 + (_softplus(0.5) + _softplus(-3)) / 2,
        "g": (_softplus(-0.5) + _softplus(3)) / 2,
    },
    "lsgan": {"d": (1 + 4) / 2 + (0.25 + 9) / 2, "g": (0.25 + 16) / 2},
    "hinge": {"d": (0 + 2) / 2 + (1.5 + 0) / 2, "g": 1.25},
}


@pytest.mark.parametrize("name", config_names("gan_loss"))
def test_gan_loss_hand_values(compose_cfg, name: str) -> None:  # noqa: ANN001
    assert name in EXPECTED, f"conf/gan_loss/{name}.yaml needs hand-computed values in this test"
    gan = instantiate(compose_cfg(f"gan_loss={name}").gan_loss)
    assert isinstance(gan, GANLoss)
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    assert float(gan.discriminator_loss(real, fake)) == pytest.approx(EXPECTED[name]["d"], rel=1e-6)
    assert float(gan.generator_loss(fake)) == pytest.approx(EXPECTED[name]["g"], rel=1e-6)


@pytest.mark.parametrize("name", config_names("gan_loss"))
def test_gan_loss_directions_and_gradients(compose_cfg, name: str) -> None:  # noqa: ANN001
    gan = instantiate(compose_cfg(f"gan_loss={name}").gan_loss)
    confident = torch.full((2, 1, 4, 4), 3.0)
    # The critic prefers high logits on real and low on fake; the generator prefers high logits on fake.
    assert gan.discriminator_loss(confident, -confident) < gan.discriminator_loss(-confident, confident)
    assert gan.generator_loss(confident) < gan.generator_loss(-confident)
    fake = torch.zeros(2, 1, 4, 4, requires_grad=True)
    gan.generator_loss(fake).backward()
    assert fake.grad is not None and (fake.grad < 0).all()  # raising the fake logits lowers the G loss
    real = torch.full((2, 1), 0.5, requires_grad=True)
    fake_d = torch.full((2, 1), 0.5, requires_grad=True)
    gan.discriminator_loss(real, fake_d).backward()
    assert real.grad is not None and fake_d.grad is not None
    assert (real.grad < 0).all() and (fake_d.grad > 0).all()
