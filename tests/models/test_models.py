"""Contract tests over every model config (each supported scale, 2D/3D, multi-frame input), and the shared
building blocks in ``psr.models.layers``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from torch import nn

from psr.models.layers import PixelShuffle3dLateral, skip_channels, skip_source, upsample_lateral
from psr.models.rcan import RCAN
from psr.models.unet import UNet
from tests.conftest import CONF, config_names

SCALES = [1, 2, 3, 4, 8]
# PSSR's multi-frame input: 5 neighbouring frames in, the centre frame out.
MULTI_FRAME = (5, 1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These tensors are too small to gain from intra-op threads, and on a shared CPU the spinning worker
    threads slow the file down many times over."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Case(NamedTuple):
    name: str
    dims: int
    in_channels: int
    out_channels: int

    def __str__(self) -> str:
        return f"{self.name}-{self.dims}d-{self.in_channels}to{self.out_channels}"

    def overrides(self, scale: int) -> list[str]:
        out = [f"model={self.name}", f"scale={scale}"]
        out += [f"model.in_channels={self.in_channels}", f"model.out_channels={self.out_channels}"]
        if _has_dims_argument(self.name):
            out.append(f"model.dims={self.dims}")
        return out

    def input(self, channels: int | None = None) -> torch.Tensor:
        spatial = (12, 10) if self.dims == 2 else (4, 12, 10)
        return torch.rand(2, self.in_channels if channels is None else channels, *spatial)


def _has_dims_argument(name: str) -> bool:
    return "dims" in OmegaConf.load(CONF / "model" / f"{name}.yaml")


def _model_dims(name: str) -> list[int]:
    """The dimensionalities a model config supports: both when it takes ``dims``, else its class's
    ``spatial_dims`` (every generator class declares one)."""
    if _has_dims_argument(name):
        return [2, 3]
    target = OmegaConf.load(CONF / "model" / f"{name}.yaml")["_target_"]
    return [int(get_class(target).spatial_dims)]


def _cases(multi_frame: bool = True) -> list[Case]:
    cases = []
    for name in config_names("model"):
        for dims in _model_dims(name):
            cases.append(Case(name, dims, 1, 1))
            if multi_frame and dims == 2:
                cases.append(Case(name, dims, *MULTI_FRAME))
    return cases


def _build(compose_cfg, case: Case, scale: int) -> nn.Module:  # noqa: ANN001
    torch.manual_seed(0)
    net = instantiate(compose_cfg(*case.overrides(scale)).model)
    assert (net.scale, net.in_channels, net.out_channels) == (scale, case.in_channels, case.out_channels)
    assert net.spatial_dims == case.dims
    return net


@pytest.mark.parametrize("case", _cases(), ids=str)
@pytest.mark.parametrize("scale", SCALES)
def test_model_contract(compose_cfg, case: Case, scale: int) -> None:  # noqa: ANN001
    """Shape, finite gradients for every parameter, a deterministic eval forward, and the global residual:
    with every weight zeroed the network's own output is 0, so what remains is the skip, the input (or the
    centre frame of a multi-frame input) upsampled bilinearly in Y and X with Z untouched."""
    net = _build(compose_cfg, case, scale)
    x = case.input()
    out = net(x)
    *lead, y, w = x.shape
    assert out.shape == (2, case.out_channels, *lead[2:], y * scale, w * scale)
    assert torch.isfinite(out).all()
    out.abs().mean().backward()
    missing = [
        n
        for n, p in net.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing, f"no finite gradient reached {missing[:5]}"
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))

    if not (getattr(net, "global_residual", False) or getattr(net, "residual", False)):
        return
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        centre = x if case.in_channels == case.out_channels else x[:, case.in_channels // 2][:, None]
        # Per-slice 2D resize: an independent check that 3D models leave Z alone.
        flat = centre.reshape(-1, 1, y, w)
        if scale > 1:
            flat = F.interpolate(flat, scale_factor=scale, mode="bilinear", align_corners=False)
        torch.testing.assert_close(net(x), flat.reshape(out.shape))


@pytest.mark.parametrize("case", _cases(multi_frame=False), ids=str)
def test_model_rejects_a_wrong_layout(compose_cfg, case: Case) -> None:  # noqa: ANN001
    net = _build(compose_cfg, case, 2)
    with pytest.raises(ValueError, match="expects"):
        net(case.input(channels=3))
    axes = "Y, X" if case.dims == 2 else "Z, Y, X"
    other_dims = Case(case.name, 5 - case.dims, 1, 1)
    with pytest.raises(ValueError, match=rf"expects \(B, 1, {axes}\)"):
        net(other_dims.input())


def test_rcan_state_dict_keys_are_stable() -> None:
    """Checkpoints of 2D RCAN written before its blocks took ``dims`` must still load."""
    keys = list(RCAN(n_feats=8, n_groups=1, n_blocks=1, reduction=4, scale=2).state_dict())
    rcab = [f"body.0.body.0.body.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    gate = [f"body.0.body.0.body.3.gate.{i}.{p}" for i in (1, 3) for p in ("weight", "bias")]
    assert keys == [
        "head.weight",
        "head.bias",
        *rcab,
        *gate,
        "body.0.body.1.weight",
        "body.0.body.1.bias",
        "body.1.weight",
        "body.1.bias",
        "upsample.0.weight",
        "upsample.0.bias",
        "tail.weight",
        "tail.bias",
    ]


def test_unet_pretrained_weights_offline_fail_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(RuntimeError, match=r"encoder_weights='imagenet'.*offline.*encoder_weights=None"):
        UNet(
            encoder_name="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], encoder_weights="imagenet"
        )


@pytest.mark.parametrize("scale", [2, 3])
def test_pixel_shuffle_3d_lateral_shuffles_each_slice_like_2d(scale: int) -> None:
    x = torch.rand(2, 3 * scale * scale, 4, 5, 6)
    out = PixelShuffle3dLateral(scale)(x)
    assert out.shape == (2, 3, 4, 5 * scale, 6 * scale)
    for z in range(4):
        torch.testing.assert_close(out[:, :, z], nn.PixelShuffle(scale)(x[:, :, z]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="expects"):
        PixelShuffle3dLateral(scale)(torch.rand(1, scale * scale + 1, 2, 3, 3))


def test_upsample_lateral_keeps_z_and_matches_2d_per_slice() -> None:
    x = torch.rand(2, 1, 3, 6, 5)
    out = upsample_lateral(x, 4)
    assert out.shape == (2, 1, 3, 24, 20)
    for z in range(3):
        torch.testing.assert_close(out[:, :, z], upsample_lateral(x[:, :, z], 4))
    assert upsample_lateral(x, 1) is x
    assert upsample_lateral(x, 2, "nearest").shape == (2, 1, 3, 12, 10)
    with pytest.raises(ValueError, match="2D only"):
        upsample_lateral(x, 2, "bicubic")


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "expected"),
    [(1, 1, [0]), (3, 3, [0, 1, 2]), (5, 1, [2]), (3, 1, [1]), (4, 1, None), (1, 3, None), (5, 2, None)],
)
def test_skip_channels(in_channels: int, out_channels: int, expected: list[int] | None) -> None:
    channels = skip_channels(in_channels, out_channels)
    assert (None if channels is None else list(range(in_channels))[channels]) == expected
    x = torch.arange(in_channels, dtype=torch.float32).reshape(1, in_channels, 1, 1)
    skip = skip_source(x, out_channels)
    assert (None if skip is None else skip.flatten().int().tolist()) == expected
