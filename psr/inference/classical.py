"""Classical denoisers, the baselines a denoising network must beat: Gaussian smoothing, non-local means
and BM3D, each applied to every 2D (Y, X) plane of an image ``(C, *S)`` on its own.

Plain numpy: usable from a notebook without Hydra. NLM and BM3D are made for white Gaussian noise of a
known level; microscopy noise is Poisson–Gaussian (its variance grows with the signal). With
``noise="vst"`` (the default) each plane's Poisson–Gaussian model ``Var = α·u + β`` is estimated from the
plane itself (``psr.metrics.noise``, no ground truth), the generalised Anscombe transform makes the noise
white with unit variance, the denoiser runs at σ = 1 and the asymptotically unbiased inverse maps back:
the classical way to use these denoisers on photon-limited images. Noise correlated between
neighbouring pixels (a colour camera's demosaicking) is measured from the plane too
(``psr.metrics.noise.correlation_width``): from a width of ``WHITE_SIGMA`` on, the variance estimate
is corrected for it, so that NLM and BM3D are given the noise's whole level; BM3D is given its spectrum
too (:func:`correlated_psd`, the ``bm3d`` package's coloured-noise mode), NLM the level as white noise.
``noise="white"`` gives them the plane's white-noise estimate instead (``skimage.restoration.estimate_sigma``), which on the W2S
development frames is 2–3× too low and leaves most of the noise in. Nothing is tuned on the ground
truth. The Gaussian filter's width is the exception:
:func:`select_gaussian_sigma` picks it on the evaluated set against the ground truth, which flatters the
baseline; it is meant as the best the filter can do, an upper bound.

BM3D needs the optional ``bm3d`` package (``pip install 'psr[classical]'``).
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

METHODS = ("gaussian", "nlm", "bm3d")
NOISE_MODELS = ("vst", "white")
BM3D_MISSING = (
    "the bm3d baseline needs the bm3d package, which is not installed: pip install 'psr[classical]'"
)


def _per_plane(image: np.ndarray, denoise: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``denoise`` on every (Y, X) plane of ``image`` ``(C, *S)``; float32 of the same shape."""
    image = np.asarray(image)
    if image.ndim < 3:
        raise ValueError(f"expected an image (C, *S) with at least two spatial axes; got shape {image.shape}")
    planes = image.reshape(-1, *image.shape[-2:])
    out = np.stack([np.asarray(denoise(plane), dtype=np.float32) for plane in planes])
    return out.reshape(image.shape)


def estimate_white_noise(plane: np.ndarray) -> float:
    """The standard deviation of the Gaussian noise in a 2D plane (``skimage.restoration.estimate_sigma``)."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(plane))


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian filter of standard deviation ``sigma`` pixels along Y and X of ``image`` ``(C, *S)``
    (reflecting borders, truncated at 4 sigma), plane by plane."""
    from scipy.ndimage import gaussian_filter

    if not sigma > 0:
        raise ValueError(f"the Gaussian sigma must be positive; got {sigma}")
    return _per_plane(image, lambda p: gaussian_filter(p, float(sigma), mode="reflect", truncate=4.0))


def noise_correlation(plane: np.ndarray) -> float:
    """The width (px) of the plane's noise correlation, measured from the plane alone
    (``psr.metrics.noise.correlation_sigma``); 0 below ``WHITE_SIGMA`` (nearly white noise, or structure
    read as correlation) or on a plane it cannot be measured on."""
    from psr.metrics.noise import NoiseEstimationError, correlation_width

    try:
        return correlation_width(np.asarray(plane, dtype=np.float64))
    except NoiseEstimationError:
        return 0.0


def poisson_gaussian(plane: np.ndarray, width: float | None = None) -> tuple[float, float]:
    """``(α, β)`` of the plane's noise model ``Var = α·u + β``, estimated from the plane alone
    (``psr.metrics.noise.estimate_noise``; the plane's extremes treated as clip limits; corrected for the
    noise's correlation of width ``width`` px, measured by :func:`noise_correlation` when ``None``). A
    plane whose noise cannot be fitted gets white noise of its wavelet estimate: ``(0, σ̂²)``."""
    from psr.metrics.noise import NoiseEstimationError, estimate_noise, laplacian_gain

    values = np.asarray(plane, dtype=np.float64)
    try:
        fit = estimate_noise(values, clip=(float(values.min()), float(values.max())))
    except NoiseEstimationError:
        return 0.0, estimate_white_noise(values) ** 2
    if not (math.isfinite(fit.alpha) and math.isfinite(fit.beta)) or fit.alpha <= 0:
        return 0.0, max(fit.beta, estimate_white_noise(values) ** 2)
    if width is None:
        width = noise_correlation(values)
    gain = laplacian_gain(width)  # the Laplacian residual's share of correlated noise
    return float(fit.alpha) / gain, float(fit.beta) / gain


def anscombe(plane: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """The generalised Anscombe transform of ``plane`` with noise ``Var = α·u + β``: noise of unit variance
    (``α = 0``: white noise of variance ``β``, divided by its standard deviation)."""
    values = np.asarray(plane, dtype=np.float64)
    if alpha <= 0:
        return values / math.sqrt(max(beta, 1e-24))
    return (2.0 / alpha) * np.sqrt(np.maximum(alpha * values + 0.375 * alpha**2 + beta, 0.0))


def inverse_anscombe(stable: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """The asymptotically unbiased inverse of :func:`anscombe`."""
    values = np.asarray(stable, dtype=np.float64)
    if alpha <= 0:
        return values * math.sqrt(max(beta, 1e-24))
    return alpha * (values**2 / 4.0 - 0.125) - beta / alpha


def _white_or_stabilised(
    plane: np.ndarray, noise: str, denoise: Callable[[np.ndarray, float, float], np.ndarray]
) -> np.ndarray:
    """``denoise(x, σ, width)`` — a denoiser for noise of level σ, correlated over ``width`` px (0: white) —
    on ``plane`` as ``noise`` says. The Anscombe transform keeps the correlation: its noise has unit
    variance and the plane's width."""
    if noise == "white":
        return denoise(plane, estimate_white_noise(plane), 0.0)
    if noise != "vst":
        raise ValueError(f"noise={noise!r}: expected one of {', '.join(NOISE_MODELS)}")
    width = noise_correlation(plane)
    alpha, beta = poisson_gaussian(plane, width)
    return inverse_anscombe(denoise(anscombe(plane, alpha, beta), 1.0, width), alpha, beta)


def nlm(
    image: np.ndarray,
    h_factor: float = 0.8,
    fast_mode: bool = True,
    patch_size: int = 5,
    patch_distance: int = 6,
    noise: str = "vst",
) -> np.ndarray:
    """Non-local means (``skimage.restoration.denoise_nl_means``) on every plane of ``image`` ``(C, *S)``.

    The filter strength is ``h = h_factor · σ`` for noise of level ``σ`` (``noise``: see the module); the
    defaults (0.8 σ, fast mode, 5×5 patches searched within 6 pixels) are scikit-image's documented recipe.
    """
    from skimage.restoration import denoise_nl_means

    def white(plane: np.ndarray, sigma: float, width: float) -> np.ndarray:  # the level as white noise
        return denoise_nl_means(
            plane,
            h=h_factor * sigma,
            sigma=sigma,
            fast_mode=fast_mode,
            patch_size=patch_size,
            patch_distance=patch_distance,
        )

    return _per_plane(image, lambda p: _white_or_stabilised(p, noise, white))


def bm3d_available() -> bool:
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return False
    return True


def correlated_psd(shape: tuple[int, int], sigma: float, width: float) -> np.ndarray:
    """The power spectral density of noise of level ``sigma`` correlated over ``width`` px (the unit-energy
    Gaussian taps of ``psr.crappifiers.correlation_taps`` along Y and X, as ``CorrelatedNoise`` makes it) on
    a plane of ``shape``, in the ``bm3d`` package's convention (white noise: ``σ² · Y · X`` everywhere)."""
    from psr.crappifiers.noise import correlation_taps

    taps = correlation_taps(float(width)).numpy()
    kernel = np.outer(taps, taps)
    return np.abs(np.fft.fft2(kernel, s=shape)) ** 2 * (shape[0] * shape[1]) * float(sigma) ** 2


@contextlib.contextmanager
def _bm4d_numpy() -> Iterator[None]:
    """The ``bm4d`` engine under ``bm3d`` integrates a coloured-noise PSD with ``np.trapz``, which NumPy 2
    removed (``np.trapezoid``, same arguments). Its module gets a numpy with both, for the call only."""
    import bm4d

    numpy = bm4d.np
    if hasattr(numpy, "trapz"):
        yield
        return

    class _Numpy(types.ModuleType):
        trapz = staticmethod(np.trapezoid)

        def __getattr__(self, name: str) -> object:
            return getattr(numpy, name)

    bm4d.np = _Numpy("numpy")
    try:
        yield
    finally:
        bm4d.np = numpy


def bm3d_denoise(image: np.ndarray, noise: str = "vst") -> np.ndarray:
    """BM3D (the ``bm3d`` package, its normal profile) on every plane of ``image`` ``(C, *S)``, for noise of
    level σ (``noise``: see the module); noise correlated from a width of ``WHITE_SIGMA`` on is given as its
    spectrum (:func:`correlated_psd`). About 15 s per 512² plane on one CPU core.

    Raises ``ModuleNotFoundError`` naming the ``classical`` extra when ``bm3d`` is not installed.
    """
    try:
        import bm3d
    except ImportError as err:
        raise ModuleNotFoundError(BM3D_MISSING) from err

    def run(plane: np.ndarray, sigma: float, width: float) -> np.ndarray:
        if width <= 0:
            return bm3d.bm3d(plane, sigma_psd=sigma)
        with _bm4d_numpy():
            return bm3d.bm3d(plane, sigma_psd=correlated_psd(plane.shape, sigma, width))

    return _per_plane(image, lambda p: _white_or_stabilised(p, noise, run))


def denoise(method: str, image: np.ndarray, sigma: float | None = None, noise: str = "vst") -> np.ndarray:
    """``method`` (one of :data:`METHODS`) on ``image`` ``(C, *S)``; ``sigma`` is the Gaussian's width,
    ``noise`` the noise model NLM and BM3D work with (see the module)."""
    if method == "gaussian":
        if sigma is None:
            raise ValueError("the gaussian baseline needs its sigma")
        return gaussian(image, sigma)
    if method == "nlm":
        return nlm(image, noise=noise)
    if method == "bm3d":
        return bm3d_denoise(image, noise=noise)
    raise ValueError(f"unknown classical denoiser {method!r}; expected one of {', '.join(METHODS)}")


def care_psnr(
    candidates: torch.Tensor, target: torch.Tensor, percentiles: tuple[float, float] = (0.1, 99.9)
) -> torch.Tensor:
    """PSNR ``(M,)`` of candidates ``(M, C, *S)`` against ``target`` ``(1, C, *S)`` with the CARE convention,
    the same number as ``psr.metrics.scores.restoration_scores`` gives (data range 1 after the fit)."""
    from psr.metrics.care import fit_affine, normalise_percentile
    from psr.metrics.image import psnr

    gt = normalise_percentile(target.double(), *percentiles).expand_as(candidates)
    return psnr(fit_affine(candidates.double(), gt), gt, data_range=1.0).double()


def select_gaussian_sigma(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    sigmas: Sequence[float],
    percentiles: tuple[float, float] = (0.1, 99.9),
) -> tuple[float, dict[float, float]]:
    """The Gaussian width of ``sigmas`` that maximises the mean CARE PSNR over a set of images.

    ``pairs``: ``(low, high)`` per image, ``low`` ``(C, *S)`` the normalised input and ``high`` ``(C, *S)``
    its ground truth. Returns the chosen sigma (the smallest of equals) and the mean PSNR of every sigma.
    """
    grid = [float(s) for s in sigmas]
    if not grid:
        raise ValueError("the Gaussian sigma grid is empty")
    totals = dict.fromkeys(grid, 0.0)
    n = 0
    for low, high in pairs:
        target = torch.as_tensor(np.asarray(high))[None]
        for sigma in grid:
            smooth = torch.from_numpy(gaussian(low, sigma))[None]
            totals[sigma] += float(care_psnr(smooth, target, percentiles)[0])
        n += 1
    if n == 0:
        raise ValueError("no image to select the Gaussian sigma on")
    means = {s: totals[s] / n for s in grid}
    finite = {s: v for s, v in means.items() if math.isfinite(v)}
    best = max(sorted(finite or means), key=lambda s: (finite or means)[s])
    return best, means
