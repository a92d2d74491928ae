"""Contract tests over every discriminator config, and the specifics of each design."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn.utils import parametrize

from psr.models.discriminators import PatchGAN, UNetSN, VGGStyle
from tests.conftest import config_names


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads, and lose a lot when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _missing_grads(net: nn.Module) -> list[str]:
    return [
        n
        for n, p in net.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]


@pytest.mark.parametrize("name", config_names("discriminator"))
@pytest.mark.parametrize("channels", [1, 3])
def test_discriminator_contract(compose_cfg, name: str, channels: int) -> None:  # noqa: ANN001
    cfg = compose_cfg(f"discriminator={name}", f"discriminator.in_channels={channels}", "data.patch_size=32")
    torch.manual_seed(0)
    net = instantiate(cfg.discriminator)
    assert net.in_channels == channels and net.spatial_dims == 2
    x = torch.rand(2, channels, 32, 32)
    logits = net(x)
    # One logit per image (B, 1), or a map of logits (B, 1, Y', X') no larger than the input.
    assert logits.shape[:2] == (2, 1) and logits.dim() in (2, 4)
    assert all(s <= 32 for s in logits.shape[2:])
    assert torch.isfinite(logits).all()
    logits.mean().backward()
    missing = _missing_grads(net)
    assert not missing, f"no finite gradient reached {missing[:5]}"
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    with pytest.raises(ValueError, match="expects"):
        net(torch.rand(2, channels + 1, 32, 32))


def test_patchgan_shapes_2d_and_3d(compose_cfg) -> None:  # noqa: ANN001
    assert PatchGAN()(torch.rand(1, 1, 64, 64)).shape == (1, 1, 6, 6)
    cfg = compose_cfg("discriminator=patchgan", "discriminator.dims=3", "discriminator.base_channels=8")
    net = instantiate(cfg.discriminator)
    assert net.spatial_dims == 3
    logits = net(torch.rand(2, 1, 24, 32, 40))
    assert logits.shape == (2, 1, 1, 2, 3)  # S // 8 - 2 per axis
    logits.mean().backward()
    assert not _missing_grads(net)
    with pytest.raises(ValueError, match="at least 24 pixels"):
        net(torch.rand(1, 1, 16, 32, 32))
    with pytest.raises(ValueError, match=r"expects \(B, 1, Z, Y, X\)"):
        net(torch.rand(1, 1, 32, 32))
    thin = PatchGAN(base_channels=8, dims=3, downsample_z=False)
    logits = thin(torch.rand(2, 1, 4, 32, 40))
    assert logits.shape == (2, 1, 4, 2, 3)  # Z kept, Y and X as in 2D
    logits.mean().backward()
    assert not _missing_grads(thin)


def test_patchgan_batch_norm_variant_trains() -> None:
    net = PatchGAN(in_channels=2, base_channels=8, norm="batch")
    net(torch.rand(2, 2, 32, 32)).mean().backward()
    assert not _missing_grads(net)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_unet_sn_is_spectrally_normalised_and_takes_odd_sizes() -> None:
    torch.manual_seed(0)
    net = UNetSN(base_channels=8)
    normalised = [m for m in net.modules() if parametrize.is_parametrized(m, "weight")]
    assert len(normalised) == 8  # all convolutions but the first and the last
    assert all(type(m.parametrizations.weight[0]).__name__ == "_SpectralNorm" for m in normalised)
    for shape in [(2, 1, 33, 47), (1, 1, 5, 7), (1, 1, 64, 64)]:
        assert net(torch.rand(shape)).shape == (shape[0], 1, *shape[2:])
    # After a few training-mode passes (one power iteration each) every weight has spectral norm ~1.
    for _ in range(30):
        net(torch.rand(1, 1, 16, 16))
    for m in normalised:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("size", [8, 64, 128])
def test_vgg_style_sizes(size: int) -> None:
    net = VGGStyle(in_channels=3, base_channels=4, input_size=size)
    assert net(torch.rand(2, 3, size, size)).shape == (2, 1)


def test_vgg_style_rejects_other_sizes() -> None:
    net = VGGStyle(base_channels=4, input_size=128)
    with pytest.raises(ValueError, match=r"built for 128×128 inputs \(input_size=128\) but got 64×64"):
        net(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="power of two"):
        VGGStyle(input_size=96)
    assert VGGStyle(base_channels=4, input_size=[32, 32]).input_size == 32
    with pytest.raises(ValueError, match="for volumes use patchgan with dims=3"):
        VGGStyle(input_size=[4, 32, 32])
