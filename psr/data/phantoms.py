"""Deterministic fluorescence-like phantoms: the embedded default data of psr.

Each image is rendered on a grid ``oversample`` times finer than the output, band-limited by a
Gaussian approximation of a widefield PSF, then integrated (area-binned) onto the output grid, the way
a camera pixel integrates the optical image. Content, per image:

- a smooth background (offset + gradient + broad autofluorescence blobs);
- nuclei: textured ellipses with soft edges;
- microtubule-like filaments: long, thin, gently curving;
- mitochondria-like tubules: short, thicker, more curved, some branching;
- puncta: diffraction-limited spots (vesicles) of varied brightness.

Brightness varies per object and per image. The same ``(seed, index)`` always gives the same image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class PhantomSpec:
    """Parameters of the phantom generator; their hash names the cached store."""

    size: int = 512
    oversample: int = 2
    psf_sigma: float = 1.0  # PSF standard deviation in output pixels
    nuclei: tuple[int, int] = (1, 4)
    microtubules: tuple[int, int] = (15, 40)
    mitochondria: tuple[int, int] = (20, 60)
    puncta: tuple[int, int] = (40, 200)
    max_value: int = 4000  # camera counts at the brightest structures
    offset: int = 100  # camera offset in counts

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _splat(canvas: np.ndarray, ys: np.ndarray, xs: np.ndarray, weights: np.ndarray) -> None:
    """Accumulate point weights onto ``canvas`` with bilinear interpolation weights."""
    h, w = canvas.shape
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    fy, fx = ys - y0, xs - x0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            np.add.at(canvas, (yy[ok], xx[ok]), (weights * wy * wx)[ok])


def _curve(
    rng: np.random.Generator, size: float, length: float, curvature: float, step: float
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random curve: a walk whose heading changes by Gaussian increments."""
    n = max(2, int(length / step))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0.0, curvature * step, n))
    y0, x0 = rng.uniform(0, size, 2)
    ys = y0 + np.cumsum(np.sin(heading) * step)
    xs = x0 + np.cumsum(np.cos(heading) * step)
    return ys, xs


def _line_layer(
    rng: np.random.Generator,
    shape: tuple[int, int],
    count: int,
    length: tuple[float, float],
    curvature: float,
    width: tuple[float, float],
    brightness: tuple[float, float],
) -> np.ndarray:
    """Render ``count`` curves of random length, width and brightness; peak value ≈ brightness."""
    out = np.zeros(shape, np.float64)
    step = 0.5
    # Group curves by width so one Gaussian filter per width class renders them all.
    widths = np.linspace(width[0], width[1], 3)
    for sigma in widths:
        canvas = np.zeros(shape, np.float64)
        for _ in range(count // len(widths) + 1):
            ys, xs = _curve(rng, shape[0], rng.uniform(*length), curvature, step)
            peak = rng.uniform(*brightness)
            # A line of point density 1/step, filtered by a Gaussian of σ, peaks at 1/(step·√(2π)·σ).
            weight = peak * step * np.sqrt(2 * np.pi) * sigma
            _splat(canvas, ys, xs, np.full(ys.shape, weight))
        out += ndimage.gaussian_filter(canvas, sigma)
    return out


def render_phantom(seed: int, index: int = 0, spec: PhantomSpec | None = None) -> np.ndarray:
    """Render one phantom as ``uint16`` camera counts, shape ``(size, size)``.

    ``(seed, index)`` fully determines the image.
    """
    spec = spec or PhantomSpec()
    rng = np.random.default_rng([seed, index])
    fine = spec.size * spec.oversample
    shape = (fine, fine)
    k = spec.oversample
    yy, xx = np.mgrid[0:fine, 0:fine] / fine

    # Background: offset, a gentle gradient, and broad cytoplasmic autofluorescence.
    image = rng.uniform(0.01, 0.06) + rng.uniform(-0.02, 0.02) * yy + rng.uniform(-0.02, 0.02) * xx
    blobs = np.zeros(shape)
    for _ in range(rng.integers(2, 6)):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.15, 0.4)
        blobs += rng.uniform(0.02, 0.08) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    image = image + blobs

    # Nuclei: soft-edged ellipses with a smooth chromatin texture.
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 3 * k)
    texture /= texture.std() + 1e-12
    for _ in range(rng.integers(spec.nuclei[0], spec.nuclei[1] + 1)):
        cy, cx = rng.uniform(0.1, 0.9, 2)
        ry, rx = rng.uniform(0.06, 0.14, 2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
        v = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
        inside = 1 / (1 + np.exp((np.sqrt(u * u + v * v) - 1) * 25))
        image += inside * rng.uniform(0.15, 0.4) * (1 + 0.25 * texture)

    # Microtubules: long, thin, gently curving filaments.
    image += _line_layer(
        rng,
        shape,
        int(rng.integers(*spec.microtubules)),
        (80 * k, 400 * k),
        0.04 / k,
        (0.4 * k, 0.6 * k),
        (0.15, 0.5),
    )
    # Mitochondria: short, thicker, more curved tubules.
    image += _line_layer(
        rng,
        shape,
        int(rng.integers(*spec.mitochondria)),
        (10 * k, 50 * k),
        0.3 / k,
        (0.9 * k, 1.6 * k),
        (0.3, 0.9),
    )
    # Puncta: point-like vesicles, rendered as tiny spots before the PSF.
    n_puncta = int(rng.integers(*spec.puncta))
    canvas = np.zeros(shape)
    _splat(
        canvas,
        rng.uniform(0, fine - 1, n_puncta),
        rng.uniform(0, fine - 1, n_puncta),
        rng.uniform(0.3, 1.0, n_puncta) * 2 * np.pi * (0.8 * k) ** 2,
    )
    image += ndimage.gaussian_filter(canvas, 0.8 * k)

    # Optics: band-limit with the PSF (Gaussian approximation), then integrate onto camera pixels.
    image = ndimage.gaussian_filter(image, spec.psf_sigma * k)
    image = image.reshape(spec.size, k, spec.size, k).mean(axis=(1, 3))

    brightness = rng.uniform(0.5, 1.0)
    counts = spec.offset + np.clip(image, 0, None) * brightness * spec.max_value
    return np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
