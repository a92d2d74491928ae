"""The batched blur kernels against a slow, straightforward reference: one image plane at a time, a
reflecting pad and an explicit sum over the kernel's taps, in float64 (what the operators computed
before they became one grouped convolution per call)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import psr.crappifiers.optics as optics
from psr.crappifiers import GaussianBlur, LocalVarianceNoise, OpticalPSF, PSFFromFile
from psr.crappifiers.noise import gaussian_smooth

ATOL = 1e-5


def reference_correlate(x: torch.Tensor, kernels: list[np.ndarray]) -> torch.Tensor:
    """Correlate each sample ``b`` of ``x`` ``(B, C, *S)`` with ``kernels[b]`` (K spans the last axes),
    reflecting borders, one plane at a time with a Python loop over the taps."""
    out = np.empty(x.shape, dtype=np.float64)
    data = x.double().numpy()
    for b in range(x.shape[0]):
        k = kernels[b]
        kd = k.ndim
        for lead in itertools.product(*(range(n) for n in x.shape[1 : x.dim() - kd])):
            plane = data[(b, *lead)]
            padded = np.pad(plane, [(s // 2, s // 2) for s in k.shape], mode="reflect")
            acc = np.zeros(plane.shape)
            for offsets in itertools.product(*(range(s) for s in k.shape)):
                window = padded[tuple(slice(o, o + n) for o, n in zip(offsets, plane.shape, strict=True))]
                acc += k[offsets] * window
            out[(b, *lead)] = acc
    return torch.from_numpy(out).float()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("shape", "kshape", "per_sample"),
    [
        ((3, 2, 20, 24), (5, 5), False),
        ((3, 2, 20, 24), (1, 9), True),
        ((3, 2, 20, 24), (7, 1), True),
        ((3, 1, 20, 24), (15, 15), True),  # 225 taps: still the direct path
        ((2, 1, 40, 40), (19, 19), True),  # FFT path
        ((2, 2, 5, 16, 18), (3, 5), True),  # a 2D kernel on each Z plane
        ((2, 1, 7, 16, 18), (3, 1, 1), True),  # along Z
        ((2, 1, 6, 12, 14), (3, 3, 3), False),
    ],
)
def test_convolve_matches_the_reference(
    shape: tuple[int, ...], kshape: tuple[int, ...], per_sample: bool
) -> None:
    x = torch.rand(shape, generator=_gen(1))
    b = shape[0]
    k = torch.rand((b, *kshape) if per_sample else kshape, generator=_gen(2))
    k = k / k.flatten(int(per_sample)).sum(-1).view(-1, *[1] * len(kshape)) if per_sample else k / k.sum()
    got = optics.convolve(x, k, per_sample=per_sample)
    kernels = [k[i].numpy().astype(np.float64) for i in range(b)] if per_sample else [k.double().numpy()] * b
    torch.testing.assert_close(got, reference_correlate(x, kernels), atol=ATOL, rtol=0)


def test_direct_path_is_one_grouped_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    conv2d = F.conv2d

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(int(kwargs.get("groups", 1)))  # type: ignore[arg-type]
        return conv2d(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setitem(optics._CONV, 2, counting)
    x = torch.rand(8, 3, 32, 32)
    optics.convolve(x, torch.rand(8, 7, 7), per_sample=True)
    assert calls == [8 * 3]  # no loop over samples, channels or taps


@pytest.mark.parametrize("aspect", [1.0, (0.4, 1.0)])
def test_gaussian_blur_matches_the_reference(aspect: float | tuple[float, float]) -> None:
    op = GaussianBlur(sigma=(0.5, 2.5), aspect=aspect)
    x = torch.rand(4, 2, 24, 28, generator=_gen(3))
    got = op(x, _gen(7))
    # The same draws as the operator: the per-sample kernels (outer product of the separable taps).
    gen = _gen(7)
    if aspect == 1.0:
        taps = optics.gaussian_taps(op.sigma.sample(4, gen, x.device), op.kernel_size).double().numpy()
        kernels = [np.outer(t, t) for t in taps]
    else:
        kernels = list(op.kernels(4, gen, x.device).double().numpy())
    torch.testing.assert_close(got, reference_correlate(x, kernels), atol=ATOL, rtol=0)


def test_gaussian_blur_in_3d_matches_the_reference() -> None:
    op = GaussianBlur(sigma=(0.5, 1.5), sigma_z=(0.5, 1.0))
    x = torch.rand(2, 1, 7, 16, 18, generator=_gen(4))
    got = op(x, _gen(8))
    gen = _gen(8)
    taps = optics.gaussian_taps(op.sigma.sample(2, gen, x.device), op.kernel_size).double().numpy()
    sz = op.sigma_z.sample(2, gen, x.device).double().numpy()
    r = op.kernel_size_z // 2
    z = np.arange(-r, r + 1)
    kernels = []
    for t, s in zip(taps, sz, strict=True):
        kz = np.exp(-0.5 * (z / s) ** 2)
        kernels.append((kz / kz.sum())[:, None, None] * np.outer(t, t)[None])
    torch.testing.assert_close(got, reference_correlate(x, kernels), atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", ["gaussian", "airy"])
def test_optical_psf_matches_the_reference(model: str) -> None:
    op = OpticalPSF(na=1.2, wavelength=520.0, pixel_size=80.0, model=model)  # gaussian: direct, airy: FFT
    x = torch.rand(2, 1, 32, 36, generator=_gen(5))
    kernel = op.kernel.double().numpy()
    torch.testing.assert_close(op(x), reference_correlate(x, [kernel] * 2), atol=ATOL, rtol=0)


def test_psf_from_file_matches_the_reference(tmp_path: Path) -> None:
    psf = np.random.default_rng(0).random((5, 7))
    np.save(tmp_path / "psf.npy", psf)
    op = PSFFromFile(str(tmp_path / "psf.npy"))
    x = torch.rand(3, 2, 20, 22, generator=_gen(6))
    torch.testing.assert_close(op(x), reference_correlate(x, [psf / psf.sum()] * 3), atol=ATOL, rtol=0)


@pytest.mark.parametrize("sigma", [1.0, 3.0, 5.0])
def test_gaussian_smooth_and_local_variance_noise_match_the_reference(sigma: float) -> None:
    x = torch.rand(3, 1, 40, 44, generator=_gen(9))
    size = 2 * max(1, math.ceil(3 * sigma)) + 1
    t = optics.gaussian_taps(torch.tensor([sigma]), size)[0].double().numpy()
    smooth = reference_correlate(x, [np.outer(t, t)] * 3)
    torch.testing.assert_close(gaussian_smooth(x, sigma), smooth, atol=ATOL, rtol=0)
    op = LocalVarianceNoise(k=(0.01, 0.1), sigma=sigma)
    got = op(x, _gen(10))
    gen = _gen(10)  # the operator's draws, in its order: k per sample, then the noise
    k = op.k.sample(3, gen, x.device).view(-1, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen)
    expected = (x + (k * smooth).clamp_min(0).sqrt() * noise).clamp(0, 1)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_fft_lengths_are_scipys_fast_lengths() -> None:
    from scipy.fft import next_fast_len

    got = [optics.fast_length(n) for n in range(1, 5001)]
    assert got == [next_fast_len(n, real=True) for n in range(1, 5001)]
    with pytest.raises(ValueError, match="n >= 1"):
        optics.fast_length(0)


def test_blur_stays_float32_under_autocast() -> None:
    x = torch.rand(2, 1, 24, 24, generator=_gen(11))
    op = GaussianBlur(sigma=(0.5, 2.0), aspect=(0.5, 1.0))
    plain = op(x, _gen(12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = op(x, _gen(12))
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, atol=ATOL, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_the_cpu() -> None:
    x = torch.rand(4, 1, 64, 64, generator=_gen(13))
    for op in (
        GaussianBlur(sigma=(0.5, 3.0), aspect=(0.5, 1.0)),
        GaussianBlur(sigma=1.0),
        LocalVarianceNoise(),
    ):
        cpu = op(x, _gen(14))
        if isinstance(op, LocalVarianceNoise):  # its noise differs by device: compare the smoothing
            torch.testing.assert_close(
                gaussian_smooth(x.cuda(), 3.0).cpu(), gaussian_smooth(x, 3.0), atol=ATOL, rtol=0
            )
            continue
        gen = torch.Generator(device="cuda").manual_seed(14)
        # Parameters drawn on the CPU generator and the CUDA one differ: compare the kernels' effect.
        kernels = op.kernels(4, _gen(15), torch.device("cpu"))
        got = optics.convolve(x.cuda(), kernels.cuda(), per_sample=True).cpu()
        torch.testing.assert_close(got, optics.convolve(x, kernels, per_sample=True), atol=ATOL, rtol=0)
        assert op.cuda()(x.cuda(), gen).shape == cpu.shape
