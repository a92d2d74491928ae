"""Contract and statistical tests for every degradation operator."""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import pkgutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from psr.crappifiers import (
    Background,
    Bleaching,
    Camera,
    Chain,
    CorrelatedNoise,
    Crappifier,
    Downsample,
    GaussianBlur,
    GaussianNoise,
    LocalVarianceNoise,
    MultiFrame,
    OneOf,
    OpticalPSF,
    PoissonNoise,
    PSFFromFile,
    Quantize,
    RandomApply,
    RandomOrder,
    SaltPepper,
    ScanLineJitter,
)
from psr.crappifiers.noise import sample_gamma

_PSF_DIR = tempfile.TemporaryDirectory(prefix="psr-psf-")  # removed when the test session ends


@functools.cache
def _psf_file() -> str:
    """A small Gaussian PSF as a ``.npy`` file, written once."""
    yy, xx = np.mgrid[-3:4, -3:4]
    path = Path(_PSF_DIR.name) / "psf.npy"
    np.save(path, np.exp(-(yy**2 + xx**2) / 3.0).astype(np.float32))
    return str(path)


# (operator, is random, the batch dimensionalities it takes)
OPERATORS: dict[str, tuple[Callable[[], Crappifier], bool, tuple[int, ...]]] = {
    "downsample-area": (lambda: Downsample(2, "area"), False, (2, 3)),
    "downsample-bilinear": (lambda: Downsample(4, "bilinear"), False, (2, 3)),
    "downsample-bicubic": (lambda: Downsample(2, "bicubic"), False, (2,)),
    "downsample-nearest": (lambda: Downsample(2, "nearest", z_factor=2), False, (2, 3)),
    "gaussian-blur": (lambda: GaussianBlur((0.5, 2.0)), True, (2, 3)),
    "gaussian-blur-aniso": (
        lambda: GaussianBlur((0.5, 2.0), aspect=(0.3, 1.0), sigma_z=(0.5, 1.0)),
        True,
        (2, 3),
    ),
    "optical-psf": (lambda: OpticalPSF(na=1.2, wavelength=520, pixel_size=60, model="airy"), False, (2, 3)),
    "optical-psf-born-wolf-3d": (
        lambda: OpticalPSF(na=1.0, wavelength=520, pixel_size=100, model="born_wolf", z_planes=3, z_step=300),
        False,
        (3,),
    ),
    "poisson": (lambda: PoissonNoise((10, 100)), True, (2, 3)),
    "poisson-mix": (lambda: PoissonNoise(255.0, mix=(0.2, 1.0)), True, (2, 3)),
    "gaussian-noise": (lambda: GaussianNoise((0.01, 0.1)), True, (2, 3)),
    "local-variance": (lambda: LocalVarianceNoise((0.05, 0.5), sigma=2.0), True, (2, 3)),
    "salt-pepper": (lambda: SaltPepper((0.01, 0.05), 0.01), True, (2, 3)),
    "camera": (lambda: Camera(photons=(10, 100)), True, (2, 3)),
    "camera-em": (lambda: Camera(photons=(5, 50), em_gain=100.0), True, (2, 3)),
    "quantize": (lambda: Quantize(8), False, (2, 3)),
    "correlated-noise": (
        lambda: CorrelatedNoise([PoissonNoise((10, 100)), GaussianNoise(0.02)], 0.7),
        True,
        (2, 3),
    ),
    "scanline-jitter": (lambda: ScanLineJitter((0.5, 2.0)), True, (2, 3)),
    "bleaching": (lambda: Bleaching((0.01, 0.2)), True, (2, 3)),
    "background": (lambda: Background((0.0, 0.1), (0.0, 0.2)), True, (2, 3)),
    "chain": (
        lambda: Chain([GaussianBlur(1.0), Downsample(2), PoissonNoise(30.0), GaussianNoise(0.01)]),
        True,
        (2, 3),
    ),
    "random-apply": (lambda: RandomApply(GaussianNoise(0.1), p=0.5), True, (2, 3)),
    "one-of": (
        lambda: OneOf([Downsample(2, "area"), Downsample(2, "bilinear")], weights=[1, 3]),
        False,
        (2, 3),
    ),
    "one-of-noise": (lambda: OneOf([PoissonNoise(20.0), GaussianNoise(0.05)]), True, (2, 3)),
    "random-order": (
        lambda: RandomOrder([Downsample(2), PoissonNoise(30.0), GaussianBlur(0.8)]),
        True,
        (2, 3),
    ),
    "multi-frame": (lambda: MultiFrame(Chain([Downsample(2), PoissonNoise(30.0)])), True, (2, 3)),
    "psf-from-file": (lambda: PSFFromFile(_psf_file()), False, (2, 3)),
}


def discover_operators() -> list[type[Crappifier]]:
    """Every ``Crappifier`` subclass defined in a module of the ``psr.crappifiers`` package, found by
    walking the package (not a list): a new operator module is picked up the moment it exists."""
    import psr.crappifiers as package

    found: dict[str, type[Crappifier]] = {}
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Crappifier) and obj is not Crappifier and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def default_constructible(cls: type) -> bool:
    """Whether ``cls()`` needs no argument."""
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in inspect.signature(cls).parameters.values()
    )


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_contract(op: Crappifier, dims: int, random: bool | None) -> None:
    """Shapes at the operator's scale, dtype and device kept, finite, the same output for the same seed;
    with ``random`` another seed gives another output (``None``: not known, not checked)."""
    shape = (4, 3, 24, 24) if dims == 2 else (2, 2, 8, 24, 24)
    x = torch.rand(shape, generator=gen(99))
    out = op(x, gen(0))
    z_factor = getattr(op, "z_factor", 1)
    expected = (*shape[:2], *((shape[2] // z_factor,) if dims == 3 else ()), 24 // op.scale, 24 // op.scale)
    assert tuple(out.shape) == expected
    assert out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    assert torch.equal(out, op(x, gen(0)))  # same seed, same degradation
    if random:
        assert not torch.equal(out, op(x, gen(1)))  # another seed, another one


@pytest.mark.parametrize("name", sorted(OPERATORS))
@pytest.mark.parametrize("dims", [2, 3])
def test_operator_contract(name: str, dims: int) -> None:
    build, random, supported = OPERATORS[name]
    if dims not in supported:
        pytest.skip(f"{name} takes {supported}D batches only")
    check_contract(build(), dims, random)


def test_every_operator_of_the_package_has_a_contract_example() -> None:
    discovered = discover_operators()
    assert {Downsample, PoissonNoise, Chain, PSFFromFile} <= set(discovered)  # the walk reaches every module
    covered = {type(m) for build, _, _ in OPERATORS.values() for m in build().modules()}
    missing = [f"{c.__module__}.{c.__qualname__}" for c in discovered if c not in covered]
    assert not missing, f"operators without an example in OPERATORS (add one with its dims): {missing}"


@pytest.mark.parametrize(
    "cls", [c for c in discover_operators() if default_constructible(c)], ids=lambda c: c.__qualname__
)
def test_every_operator_works_with_its_defaults(cls: type[Crappifier]) -> None:
    """Found by walking the package: a new operator with default arguments is tested with no edit here."""
    check_contract(cls(), 2, None)


def test_float64_batches_keep_their_dtype() -> None:
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    for build, _, supported in OPERATORS.values():
        if 2 in supported:
            assert build()(x, gen(0)).dtype == torch.float64


# --- statistics --------------------------------------------------------------------------------------


def test_poisson_variance_is_mean_over_photons() -> None:
    photons = 40.0
    out = PoissonNoise(photons)(torch.full((1, 1, 1000, 1000), 0.5), gen(0))
    assert abs(out.mean().item() - 0.5) < 0.005
    expected = 0.5 / photons
    assert abs(out.var().item() - expected) / expected < 0.05


def test_poisson_range_draws_a_log_uniform_budget_per_sample() -> None:
    out = PoissonNoise((5, 500))(torch.full((256, 1, 32, 32), 0.5), gen(0))
    implied = 0.5 / out.flatten(1).var(1)
    logs = torch.log10(implied)
    # log-uniform over [log10 5, log10 500]: about half the budgets below the geometric mean 50
    assert 0.35 < (implied < 50).float().mean().item() < 0.65
    assert logs.min() < 1.0 and logs.max() > 2.4


@pytest.mark.parametrize("width", [0.5, 0.7, 1.2])
def test_correlated_noise_keeps_the_variance_and_has_the_taps_correlation(width: float) -> None:
    from psr.crappifiers.noise import correlation_taps

    x = torch.full((1, 1, 600, 600), 0.5)
    noise = CorrelatedNoise([PoissonNoise(50.0), GaussianNoise(0.03)], width)(x, gen(0)) - x
    assert noise.var().item() == pytest.approx(0.5 / 50 + 0.03**2, rel=0.05)  # the steps' own variance
    k = correlation_taps(width)
    for lag in (1, 2):
        expected = float((k[:-lag] * k[lag:]).sum())
        for axis in (-1, -2):
            a, b = noise.narrow(axis, 0, 600 - lag), noise.narrow(axis, lag, 600 - lag)
            assert (a * b).mean().item() / noise.var().item() == pytest.approx(expected, abs=0.02)
    white = CorrelatedNoise([GaussianNoise(0.1)], 0.0)(x, gen(0))
    assert torch.equal(white, GaussianNoise(0.1)(x, gen(0)))
    with pytest.raises(ValueError, match="must keep the image size; they downsample by 2"):
        CorrelatedNoise([Downsample(2), GaussianNoise(0.1)])


def test_gaussian_sigma_and_clipping() -> None:
    x = torch.zeros(1, 1, 1000, 1000)
    assert abs(GaussianNoise(0.1)(x, gen(0)).std().item() - 0.1) < 0.001
    assert GaussianNoise(0.1, clip_min=0.0)(x, gen(0)).min() >= 0


def test_local_variance_noise_follows_the_smoothed_signal() -> None:
    x = torch.cat([torch.full((1, 1, 512, 256), 0.2), torch.full((1, 1, 512, 256), 0.8)], dim=-1)
    out = LocalVarianceNoise(k=0.05, sigma=3.0, clip_min=None, clip_max=None)(x, gen(0))
    left, right = out[..., 32:-32, 16:112], out[..., 32:-32, 400:496]
    assert abs(left.var().item() - 0.05 * 0.2) / (0.05 * 0.2) < 0.05
    assert abs(right.var().item() - 0.05 * 0.8) / (0.05 * 0.8) < 0.05


def test_salt_and_pepper_fractions() -> None:
    out = SaltPepper(salt=0.005, pepper=0.005)(torch.full((1, 1, 1000, 1000), 0.5), gen(0))
    assert abs((out == 1.0).float().mean().item() - 0.005) < 0.0005
    assert abs((out == 0.0).float().mean().item() - 0.005) < 0.0005


def test_area_downsampling_preserves_the_mean_and_bins_exactly() -> None:
    x = torch.rand(4, 1, 64, 64)
    out = Downsample(4, "area")(x)
    assert torch.allclose(out.mean(), x.mean(), atol=1e-6)
    assert torch.allclose(out[0, 0, 0, 0], x[0, 0, :4, :4].mean())
    assert torch.equal(Downsample(4, "nearest")(x)[0, 0, 1, 2], x[0, 0, 6, 10])


def _fwhm(profile: np.ndarray, pixel: float) -> float:
    c = int(np.argmax(profile))
    half = profile[c] / 2
    i = c + int(np.nonzero(profile[c:] < half)[0][0])
    frac = (profile[i - 1] - half) / (profile[i - 1] - profile[i])
    return 2 * (i - 1 - c + frac) * pixel


@pytest.mark.parametrize("model", ["gaussian", "airy", "born_wolf"])
@pytest.mark.parametrize(("na", "wavelength"), [(1.4, 520.0), (0.8, 600.0)])
def test_optical_psf_fwhm(model: str, na: float, wavelength: float) -> None:
    pixel = 10.0
    psf = OpticalPSF(na=na, wavelength=wavelength, pixel_size=pixel, model=model)  # type: ignore[arg-type]
    kernel = psf.kernel.numpy()
    assert abs(kernel.sum() - 1) < 1e-5
    fwhm = _fwhm(kernel[kernel.shape[0] // 2], pixel)
    assert abs(fwhm - 0.51 * wavelength / na) / (0.51 * wavelength / na) < 0.05


def test_confocal_psf_is_narrower_and_born_wolf_defocus_spreads() -> None:
    wide = OpticalPSF(na=1.2, pixel_size=10.0, model="airy").kernel.numpy()
    conf = OpticalPSF(na=1.2, pixel_size=10.0, model="airy", mode="confocal").kernel.numpy()
    ratio = _fwhm(wide[wide.shape[0] // 2], 10) / _fwhm(conf[conf.shape[0] // 2], 10)
    assert 1.3 < ratio < 1.5
    stack = OpticalPSF(na=1.0, pixel_size=50.0, model="born_wolf", z_planes=5, z_step=400).kernel.numpy()
    peaks = stack.max(axis=(1, 2))
    assert peaks[2] == peaks.max() and peaks[0] < 0.7 * peaks[2]


def test_psf_from_file(tmp_path: Path) -> None:
    psf = np.zeros((8, 8), np.float32)  # even size: padded so the peak stays at index 4
    psf[4, 4], psf[4, 5] = 3.0, 1.0
    tifffile.imwrite(tmp_path / "psf.tif", psf)
    np.save(tmp_path / "psf.npy", psf)
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    for name in ("psf.tif", "psf.npy"):
        out = PSFFromFile(str(tmp_path / name))(x, gen(0))
        assert abs(out.sum().item() - 1) < 1e-6
        assert out[0, 0, 8, 8].item() == pytest.approx(0.75)
        assert out[0, 0, 8, 7].item() == pytest.approx(0.25)  # correlation: the tap at +1 lands at −1


def test_camera_saturates_and_carries_its_offset() -> None:
    cam = Camera(photons=1e6, bit_depth=12, offset=100.0, normalize=False)
    bright = cam(torch.full((1, 1, 32, 32), 10.0), gen(0))
    assert bright.max().item() == 4095
    dark = Camera(photons=10.0, read_noise=0.0, dark_current=0.0, offset=100.0, normalize=False)(
        torch.zeros(1, 1, 64, 64), gen(0)
    )
    assert torch.all(dark == 100)
    mid = Camera(photons=1000.0, read_noise=1.0, normalize=True)(torch.full((1, 1, 256, 256), 0.5), gen(0))
    assert abs(mid.mean().item() - 0.5) < 0.02  # normalised back to intensity units


def test_gamma_sampler_moments() -> None:
    k = torch.tensor([0.5, 2.0, 20.0]).repeat_interleave(200_000)
    s = sample_gamma(k, gen(0)).view(3, -1)
    for i, shape in enumerate([0.5, 2.0, 20.0]):
        assert abs(s[i].mean().item() - shape) / shape < 0.02
        assert abs(s[i].var().item() - shape) / shape < 0.03
    assert torch.all(sample_gamma(torch.zeros(10), gen(0)) == 0)


def test_quantize_levels() -> None:
    out = Quantize(bits=2)(torch.tensor([[[[-0.5, 0.1, 0.5, 0.9, 2.0]]]]), gen(0))
    assert torch.allclose(out, torch.tensor([[[[0.0, 0.0, 2 / 3, 1.0, 1.0]]]]))


def test_bleaching_and_background() -> None:
    x = torch.ones(2, 5, 8, 8)
    out = Bleaching(rate=0.1)(x, gen(0))
    assert torch.allclose(out[:, :, 0, 0], torch.exp(-0.1 * torch.arange(5.0)).expand(2, 5))
    bg = Background(offset=0.1, gradient=0.0)(torch.zeros(1, 1, 8, 8), gen(0))
    assert torch.allclose(bg, torch.full_like(bg, 0.1))
    ramp = Background(offset=0.0, gradient=0.4)(torch.zeros(1, 1, 64, 64), gen(0))
    assert abs((ramp.max() - ramp.min()).item() - 0.4) < 0.02


def test_scanline_jitter_moves_rows_only() -> None:
    x = torch.arange(32.0).repeat(32, 1)[None, None]  # a horizontal ramp: rows are identical
    out = ScanLineJitter(shift=2.0)(x, gen(0))
    assert not torch.equal(out, x)
    xt = x.transpose(-1, -2).contiguous()  # a vertical ramp: shifting along X changes nothing
    assert torch.allclose(ScanLineJitter(shift=2.0)(xt, gen(0)), xt)


def test_random_apply_probability_and_one_of_weights() -> None:
    x = torch.zeros(4000, 1, 4, 4)
    applied = RandomApply(Background(offset=1.0, gradient=0.0), p=0.3)(x, gen(0))[:, 0, 0, 0]
    assert abs(applied.mean().item() - 0.3) < 0.03
    chosen = OneOf([Background(1.0, 0.0), Background(2.0, 0.0)], weights=[1, 3])(x, gen(0))[:, 0, 0, 0]
    assert abs((chosen == 2.0).float().mean().item() - 0.75) < 0.03


def test_random_order_uses_several_orders() -> None:
    op = RandomOrder([Background(1.0, 0.0), Bleaching(rate=math.log(2))])
    out = op(torch.zeros(200, 2, 4, 4), gen(0))[:, 1, 0, 0]  # frame 1: halved after or before +1
    assert set(out.unique().tolist()) == {0.5, 1.0}


def test_multi_frame_degrades_frames_independently() -> None:
    x = torch.full((2, 5, 16, 16), 0.5)
    out = MultiFrame(PoissonNoise(30.0))(x, gen(0))
    assert not torch.equal(out[:, 0], out[:, 1])


# --- invalid parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PoissonNoise(-1.0), "photons must be > 0"),
        (lambda: PoissonNoise((0, 10)), "photons must be > 0"),
        (lambda: PoissonNoise(10.0, mix=1.5), "mix must be <= 1"),
        (lambda: GaussianNoise(-0.1), "sigma must be >= 0"),
        (lambda: GaussianNoise((0.2, 0.1)), "low > high"),
        (lambda: GaussianNoise((0.1, 0.2, 0.3)), r"number or a \[low, high\] pair"),
        (lambda: GaussianNoise(math.nan), "finite"),
        (lambda: GaussianNoise({"low": 0.1}), "needs keys low, high"),
        (lambda: GaussianBlur(-1.0), "sigma must be >= 0"),
        (lambda: GaussianBlur(1.0, kernel_size=4), "odd"),
        (lambda: Downsample(0), "integer >= 1"),
        (lambda: Downsample(2.5), "integer >= 1"),  # type: ignore[arg-type]
        (lambda: Downsample(2, "lanczos"), "mode must be one of"),  # type: ignore[arg-type]
        (lambda: RandomApply(GaussianNoise(0.1), p=1.5), r"probability in \[0, 1\]"),
        (lambda: RandomApply(Downsample(2), p=0.5), "keeps the size"),
        (lambda: OneOf([Downsample(2), Downsample(4)]), "share one scale"),
        (lambda: SaltPepper(salt=-0.1), "salt must be >= 0"),
        (lambda: Camera(qe=1.2), r"probability in \[0, 1\]"),
        (lambda: Camera(em_gain=0.5), "em_gain must be >= 1"),
        (lambda: OpticalPSF(na=-1.0), "na must be > 0"),
        (lambda: OpticalPSF(na=1.6), "below the refractive index"),
        (lambda: PSFFromFile("/no/such/psf.tif"), "does not exist"),
        (lambda: Quantize(bits=0), "bits must be an integer"),
        (lambda: Bleaching(rate=-0.1), "rate must be >= 0"),
    ],
)
def test_invalid_parameters_fail_at_construction(build: Callable[[], Crappifier], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_batches_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Downsample(4)(torch.rand(1, 1, 10, 16))
    with pytest.raises(ValueError, match=r"\(B, C, Y, X\)"):
        PoissonNoise(10.0)(torch.rand(16, 16))
    with pytest.raises(ValueError, match="larger than the image"):
        GaussianBlur(5.0)(torch.rand(1, 1, 12, 12), gen(0))


@pytest.mark.parametrize("kshape", [(5, 5), (1, 19), (19, 1), (21, 19), (13, 11)])
@pytest.mark.parametrize("per_sample", [False, True])
def test_convolution_matches_scipy_on_odd_shapes(kshape: tuple[int, int], per_sample: bool) -> None:
    """Direct (shift-and-add) and FFT paths both equal scipy's correlation with mirrored borders."""
    from scipy import ndimage

    from psr.crappifiers.optics import convolve

    x = torch.rand(2, 3, 41, 37, dtype=torch.float64, generator=gen(0))
    kernel = torch.rand(2, *kshape, dtype=torch.float64, generator=gen(1))
    out = convolve(x, kernel if per_sample else kernel[0], per_sample=per_sample)
    for b in range(2):
        ref = ndimage.correlate(x[b, 2].numpy(), kernel[b if per_sample else 0].numpy(), mode="mirror")
        assert np.abs(out[b, 2].numpy() - ref).max() < 1e-10


def test_convolution_of_3d_batches_with_2d_and_3d_kernels() -> None:
    from scipy import ndimage

    from psr.crappifiers.optics import convolve

    x = torch.rand(1, 1, 10, 30, 30, dtype=torch.float64, generator=gen(0))
    k2 = torch.rand(5, 5, dtype=torch.float64, generator=gen(1))
    k3 = torch.rand(17, 5, 5, dtype=torch.float64, generator=gen(2))
    assert np.allclose(
        convolve(x, k2)[0, 0, 4].numpy(), ndimage.correlate(x[0, 0, 4].numpy(), k2.numpy(), mode="mirror")
    )
    assert np.allclose(
        convolve(x, k3)[0, 0].numpy(), ndimage.correlate(x[0, 0].numpy(), k3.numpy(), mode="mirror")
    )


def test_born_wolf_kernel_equals_the_integral_at_every_sub_pixel() -> None:
    """The radial-profile shortcut gives the kernel of the integral evaluated at every sub-pixel point."""
    from psr.crappifiers.optics import _born_wolf

    psf = OpticalPSF(na=1.4, wavelength=520.0, pixel_size=20.0, model="born_wolf", z_planes=3, z_step=300)
    kernel = psf.kernel.numpy()
    size, sub = kernel.shape[-1], 5
    coords = (np.arange(size * sub) - (size * sub - 1) / 2) / sub * 20.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    r = np.hypot(yy, xx)
    planes = np.stack([_born_wolf(r, np.full_like(r, z), 1.4, 520.0, 1.518) for z in (-300.0, 0.0, 300.0)])
    direct = planes.reshape(3, size, sub, size, sub).mean(axis=(2, 4))
    direct /= direct.sum()
    np.testing.assert_allclose(kernel, direct, atol=1e-4 * direct.max())
