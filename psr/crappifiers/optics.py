"""Optical blur: Gaussian kernels, PSFs computed from the objective, and measured PSFs from files.

Convolution uses reflecting borders and keeps the image size. Kernels of at most ``DIRECT_TAPS`` taps
(separable Gaussians are applied one axis at a time) are one grouped convolution over the whole batch,
a kernel per image plane; larger ones go through the FFT, whose cost does not depend on the kernel size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from psr.crappifiers.base import Crappifier, Param, Range, check_batch

# Kernels with more taps go through the FFT, whose cost does not depend on the kernel size. Measured
# crossovers of one grouped convolution against the FFT: ~19 × 19 taps for a 512² batch on one CPU core,
# ~10 × 10 for 256 × 1024² per-sample kernels on an H200 (7 × 7: 8.6 ms vs 15.2 ms; 13 × 13: 19.3 vs 15.2).
DIRECT_TAPS = {"cpu": 256, "cuda": 100}
DIRECT_TAPS_OTHER = 100  # other accelerators: as CUDA
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _pad_reflect(x: torch.Tensor, kernel_shape: tuple[int, ...], who: str) -> torch.Tensor:
    spatial = x.shape[-len(kernel_shape) :]
    for size, k in zip(spatial, kernel_shape, strict=True):
        if k // 2 >= size:
            raise ValueError(
                f"{who}: a kernel of size {list(kernel_shape)} is larger than the image {list(spatial)}; "
                "use a smaller kernel (or sigma) or larger patches"
            )
    pads: list[int] = []
    for k in reversed(kernel_shape):
        pads += [k // 2, k // 2]
    return F.pad(x, pads, mode="reflect")


def convolve(
    x: torch.Tensor, kernel: torch.Tensor, who: str = "convolve", per_sample: bool = False
) -> torch.Tensor:
    """Correlate ``x`` ``(B, C, *S)`` with odd-sized kernels, same size out, reflecting borders.

    ``kernel`` is ``(*K)`` (one kernel for all) or, with ``per_sample``, ``(B, *K)``; ``K`` spans the last
    ``len(K)`` axes of ``x`` (1 to 3 of them), so a 2D kernel on a 3D batch filters each Z plane. Kernels
    of at most ``DIRECT_TAPS[device]`` taps are applied by one grouped ``conv1d/2d/3d`` call over all image
    planes (``groups`` = planes, each with its sample's kernel); larger ones through the FFT.
    """
    kdims = kernel.dim() - 1 if per_sample else kernel.dim()
    shared = not per_sample
    kshape = tuple(kernel.shape[-kdims:])
    if any(k % 2 == 0 for k in kshape):
        raise ValueError(f"{who}: kernels must have odd sizes, got {list(kshape)}")
    if not 1 <= kdims <= 3:
        raise ValueError(f"{who}: kernels must have 1 to 3 axes, got {list(kshape)}")
    b, c = x.shape[:2]
    lead = x.shape[2 : x.dim() - kdims]  # e.g. Z when a 2D kernel filters 3D planes
    planes = x.reshape(b, c * math.prod(lead), *x.shape[x.dim() - kdims :])
    padded = _pad_reflect(planes, kshape, who)
    kernel = kernel.to(x)
    if math.prod(kshape) > DIRECT_TAPS.get(x.device.type, DIRECT_TAPS_OTHER):
        out = _fft_convolve(padded, kernel if shared else kernel[:, None], kshape)
    else:
        out = _grouped_convolve(padded, kernel, kshape, shared)
    return out.reshape(x.shape)


@contextmanager
def _exact_float32(device: torch.device) -> Iterator[None]:
    """Convolve in float32 as written: no autocast (bf16 under ``precision=bf16-mixed``) and no TF32 in
    cuDNN, so a degradation is the same on every device (and the same as the FFT path)."""
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    with torch.autocast(device.type, enabled=False):
        if tf32:
            torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            if tf32:
                torch.backends.cudnn.allow_tf32 = True


def _grouped_convolve(
    padded: torch.Tensor, kernel: torch.Tensor, kshape: tuple[int, ...], shared: bool
) -> torch.Tensor:
    """Valid correlation of ``padded`` ``(B, M, *P)`` with ``kernel`` ``(*K)`` or ``(B, *K)`` as ONE
    grouped convolution: the ``B · M`` planes are the channels of a single image, each its own group."""
    b, m = padded.shape[:2]
    n = b * m
    weight = kernel.reshape(1, *kshape).expand(n, *kshape) if shared else kernel.repeat_interleave(m, 0)
    weight = weight.reshape(n, 1, *kshape).contiguous()
    conv = _CONV[len(kshape)]
    with _exact_float32(padded.device):
        out = conv(padded.reshape(1, n, *padded.shape[2:]), weight, groups=n)
    return out.reshape(b, m, *out.shape[2:])


def fast_length(n: int) -> int:
    """The smallest ``2^a · 3^b · 5^c`` ≥ ``n``: an FFT length with small prime factors only (what
    ``scipy.fft.next_fast_len(n, real=True)`` returns, without importing SciPy at start-up)."""
    if n < 1:
        raise ValueError(f"fast_length needs n >= 1, got {n}")
    best = 1 << (n - 1).bit_length()  # the next power of two is always a candidate
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35 << max(0, (-(-n // p35) - 1).bit_length())  # times the smallest power of 2 that reaches n
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _fft_convolve(padded: torch.Tensor, kernel: torch.Tensor, kshape: tuple[int, ...]) -> torch.Tensor:
    dims = tuple(range(-len(kshape), 0))
    size = padded.shape[-len(kshape) :]
    # Transform lengths with small prime factors only (e.g. 548 = 4 · 137 is twice as slow as 560).
    # Zero-extending beyond the reflected margin is safe: every output kept reads only the padded image.
    fast = tuple(fast_length(int(n)) for n in size)
    k = torch.zeros(
        *kernel.shape[: kernel.dim() - len(kshape)], *fast, dtype=padded.dtype, device=padded.device
    )
    # conv2d/conv3d correlate; the FFT product convolves: flip the kernel so both paths agree.
    k[(...,) + tuple(slice(0, s) for s in kshape)] = torch.flip(kernel, dims=dims)
    k = torch.roll(k, shifts=tuple(-(s // 2) for s in kshape), dims=dims)
    spectrum = torch.fft.rfftn(padded, s=fast, dim=dims) * torch.fft.rfftn(k, dim=dims)
    full = torch.fft.irfftn(spectrum, s=fast, dim=dims)
    crop = (...,) + tuple(slice(s // 2, n - s // 2) for s, n in zip(kshape, size, strict=True))
    return full[crop]


def gaussian_taps(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1D Gaussian kernels ``(B, size)`` for per-sample ``sigma`` ``(B,)`` (pixels), in its dtype."""
    r = size // 2
    t = torch.arange(-r, r + 1, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    return k / k.sum(1, keepdim=True)


class GaussianBlur(Crappifier):
    """Anisotropic, rotated Gaussian blur with per-sample parameters (Real-ESRGAN's blur kernels).

    ``sigma`` is the standard deviation along the major axis in pixels (Real-ESRGAN: [0.2, 3]);
    ``aspect`` the minor/major ratio in (0, 1] (1: isotropic); ``rotation`` the major axis angle in
    radians. ``sigma_z`` blurs 3D batches along Z (0: none). The kernel spans ±3σ of the largest σ (odd,
    at least 3) unless ``kernel_size`` is given. A Gaussian also approximates a widefield PSF
    (CSBDeep's example: σxy = 1 px, σz = 3 px).
    """

    def __init__(
        self,
        sigma: Range = (0.2, 3.0),
        aspect: Range = 1.0,
        rotation: Range = (-math.pi, math.pi),
        sigma_z: Range = 0.0,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        self.sigma = Param.parse(sigma, "GaussianBlur sigma", minimum=0.0)
        self.aspect = Param.parse(aspect, "GaussianBlur aspect", minimum=0.0, exclusive_min=True, maximum=1.0)
        self.rotation = Param.parse(rotation, "GaussianBlur rotation")
        self.sigma_z = Param.parse(sigma_z, "GaussianBlur sigma_z", minimum=0.0)
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise ValueError(f"GaussianBlur kernel_size must be odd and >= 1, got {kernel_size}")
        self.kernel_size = kernel_size or max(3, 2 * math.ceil(3 * self.sigma.high) + 1)
        self.kernel_size_z = max(3, 2 * math.ceil(3 * self.sigma_z.high) + 1) if self.sigma_z.high > 0 else 1

    def kernels(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """Per-sample normalised 2D kernels ``(B, k, k)``."""
        sigma = self.sigma.sample(batch, generator, device).clamp_min(1e-3)
        minor = sigma * self.aspect.sample(batch, generator, device)
        theta = self.rotation.sample(batch, generator, device)
        r = self.kernel_size // 2
        coords = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
        u = xx * cos + yy * sin
        v = -xx * sin + yy * cos
        k = torch.exp(-0.5 * ((u / sigma.view(-1, 1, 1)) ** 2 + (v / minor.view(-1, 1, 1)) ** 2))
        return k / k.sum(dim=(-2, -1), keepdim=True)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ndim = check_batch(x, "GaussianBlur")
        if self.aspect.fixed and self.aspect.low == 1.0:
            # Isotropic: separable, one axis at a time (2k instead of k² taps); no rotation to draw.
            taps = gaussian_taps(self.sigma.sample(x.shape[0], generator, x.device), self.kernel_size)
            out = convolve(x, taps[:, None, :], "GaussianBlur", per_sample=True)
            out = convolve(out, taps[:, :, None], "GaussianBlur", per_sample=True)
        else:
            out = convolve(x, self.kernels(x.shape[0], generator, x.device), "GaussianBlur", per_sample=True)
        if ndim == 3 and self.kernel_size_z > 1:
            sz = self.sigma_z.sample(x.shape[0], generator, x.device).clamp_min(1e-3)
            r = self.kernel_size_z // 2
            z = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
            kz = torch.exp(-0.5 * (z[None] / sz[:, None]) ** 2)
            kz = (kz / kz.sum(1, keepdim=True)).view(-1, self.kernel_size_z, 1, 1)
            out = convolve(out, kz, "GaussianBlur (z)", per_sample=True)
        return out


def _airy_intensity(v: np.ndarray) -> np.ndarray:
    """Normalised Airy pattern ``(2 J1(v) / v)^2`` with value 1 at ``v = 0``."""
    from scipy import special  # ~0.1 s at import: only the PSF models pay for it

    v = np.asarray(v, dtype=np.float64)
    out = np.ones_like(v)
    nz = v > 1e-9
    out[nz] = (2 * special.j1(v[nz]) / v[nz]) ** 2
    return out


def _born_wolf(r_nm: np.ndarray, z_nm: np.ndarray, na: float, wavelength: float, n: float) -> np.ndarray:
    """Born & Wolf scalar PSF: |∫₀¹ J0(k NA r ρ) exp(-i k z NA² ρ² / (2n)) ρ dρ|², normalised to 1 at focus."""
    from scipy import special

    k = 2 * np.pi / wavelength
    rho = (np.arange(256) + 0.5) / 256
    bessel = special.j0(k * na * r_nm[..., None] * rho)
    phase = np.exp(-0.5j * k * z_nm[..., None] * na**2 * rho**2 / n)
    integral = (bessel * phase * rho).sum(-1) / 256
    return np.abs(integral) ** 2 / 0.25  # the in-focus integral at r = 0 is 1/2


class OpticalPSF(Crappifier):
    """Blur by the point-spread function of an objective, computed from its numerical aperture.

    ``wavelength`` is the emission wavelength and ``pixel_size`` the pixel of the *clean* image, both in
    nm. Models: ``gaussian`` (FWHM = 0.51 λ/NA laterally, CSBDeep / Zhang et al. 2007), ``airy`` (the
    in-focus Airy disk (2 J1(v)/v)²), ``born_wolf`` (scalar defocus model; 3D with ``z_planes`` planes
    ``z_step`` nm apart, else its focal plane, which equals ``airy``). ``confocal`` squares the PSF
    (excitation ≈ emission, closed pinhole), narrowing it by about √2. Each pixel integrates the PSF over
    its area (5× supersampling). The kernel covers ``rings`` Airy rings unless ``size`` is given.
    """

    def __init__(
        self,
        na: float = 1.2,
        wavelength: float = 520.0,
        pixel_size: float = 40.0,
        model: Literal["gaussian", "airy", "born_wolf"] = "airy",
        mode: Literal["widefield", "confocal"] = "widefield",
        refractive_index: float = 1.518,
        z_planes: int = 1,
        z_step: float = 100.0,
        size: int | None = None,
        rings: float = 3.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("na", na),
            ("wavelength", wavelength),
            ("pixel_size", pixel_size),
            ("z_step", z_step),
        ):
            if not value > 0:
                raise ValueError(f"OpticalPSF {name} must be > 0, got {value!r}")
        if na >= refractive_index:
            raise ValueError(f"OpticalPSF na={na} must be below the refractive index {refractive_index}")
        if model not in ("gaussian", "airy", "born_wolf"):
            raise ValueError(f"OpticalPSF model must be gaussian, airy or born_wolf; got {model!r}")
        if mode not in ("widefield", "confocal"):
            raise ValueError(f"OpticalPSF mode must be widefield or confocal; got {mode!r}")
        if z_planes < 1 or z_planes % 2 == 0 or (z_planes > 1 and model != "born_wolf"):
            raise ValueError(
                f"OpticalPSF z_planes must be odd, and > 1 only with model=born_wolf; got {z_planes}"
            )
        self.kernel: torch.Tensor
        self.na, self.wavelength, self.pixel_size = na, wavelength, pixel_size
        self.model, self.mode = model, mode
        if size is None:
            radius_nm = (0.61 + 0.5 * (rings - 1)) * wavelength / na
            size = 2 * max(1, math.ceil(radius_nm / pixel_size)) + 1
        if size < 1 or size % 2 == 0:
            raise ValueError(f"OpticalPSF size must be odd and >= 1, got {size}")
        kernel = self._kernel(size, z_planes, z_step, refractive_index)
        self.register_buffer("kernel", torch.from_numpy(kernel.astype(np.float32)), persistent=False)

    @property
    def fwhm_nm(self) -> float:
        """Nominal lateral FWHM of the widefield model: 0.51 λ / NA."""
        return 0.51 * self.wavelength / self.na

    def _kernel(self, size: int, z_planes: int, z_step: float, n: float) -> np.ndarray:
        sub = 5
        coords = (np.arange(size * sub) - (size * sub - 1) / 2) / sub * self.pixel_size
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        r = np.hypot(yy, xx)
        if self.model == "gaussian":
            sigma = self.fwhm_nm / (2 * math.sqrt(2 * math.log(2)))
            planes = np.exp(-0.5 * (r / sigma) ** 2)[None]
        elif self.model == "airy":
            planes = _airy_intensity(2 * np.pi * self.na * r / self.wavelength)[None]
        else:
            zs = (np.arange(z_planes) - z_planes // 2) * z_step
            # The PSF is radially symmetric: evaluate the integral on a fine 1-D grid of radii (0.25 of
            # the sub-pixel step) and interpolate, instead of at every one of the (size·5)² grid points.
            radii = np.arange(0.0, r.max() + self.pixel_size / sub, self.pixel_size / sub / 4)
            planes = np.stack(
                [
                    np.interp(
                        r, radii, _born_wolf(radii, np.full_like(radii, z), self.na, self.wavelength, n)
                    )
                    for z in zs
                ]
            )
        if self.mode == "confocal":
            planes = planes**2
        binned = planes.reshape(planes.shape[0], size, sub, size, sub).mean(axis=(2, 4))
        binned /= binned.sum()
        return binned[0] if z_planes == 1 else binned

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ndim = check_batch(x, "OpticalPSF")
        if self.kernel.dim() == 3 and ndim != 3:
            raise ValueError(
                f"OpticalPSF with a 3D PSF needs (B, C, Z, Y, X) batches, got shape {tuple(x.shape)}"
            )
        return convolve(x, self.kernel, "OpticalPSF")


class PSFFromFile(Crappifier):
    """Blur by a measured or simulated PSF read from a ``.tif``/``.tiff`` or ``.npy`` file (2D or 3D).

    The PSF is normalised to sum 1; even-sized axes get a zero plane appended so the peak stays at
    index ``size // 2``. A 2D PSF filters each Z plane of 3D batches.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        file = Path(path).expanduser()
        if not file.is_file():
            raise ValueError(f"PSFFromFile: '{path}' does not exist; expected a .tif or .npy PSF")
        if file.suffix.lower() == ".npy":
            psf = np.load(file, allow_pickle=False)
        elif file.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            psf = tifffile.imread(file)
        else:
            raise ValueError(f"PSFFromFile: '{path}' is neither .tif/.tiff nor .npy")
        psf = np.squeeze(np.asarray(psf, dtype=np.float64))
        if psf.ndim not in (2, 3):
            raise ValueError(f"PSFFromFile: '{path}' has shape {psf.shape}; expected a 2D or 3D PSF")
        if not np.isfinite(psf).all() or (psf < 0).any() or psf.sum() <= 0:
            raise ValueError(
                f"PSFFromFile: '{path}' must hold finite, non-negative values with a positive sum"
            )
        pad = [(0, 1 - s % 2) for s in psf.shape]
        psf = np.pad(psf, pad)
        self.path = str(file)
        self.kernel: torch.Tensor
        self.register_buffer(
            "kernel", torch.from_numpy((psf / psf.sum()).astype(np.float32)), persistent=False
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ndim = check_batch(x, "PSFFromFile")
        if self.kernel.dim() == 3 and ndim != 3:
            raise ValueError(
                f"PSFFromFile: a 3D PSF needs (B, C, Z, Y, X) batches, got shape {tuple(x.shape)}"
            )
        return convolve(x, self.kernel, f"PSFFromFile({self.path})")
