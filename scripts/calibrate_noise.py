"""Calibrate a Poisson + Gaussian crappifier from raw low-quality frames alone (no clean target).

    python scripts/calibrate_noise.py ../shared/data/pairs/w2s_dev/low --out conf/crappifier/calibrated_w2s.yaml
    python scripts/calibrate_noise.py 'raw/*.tif' --channel 0 --out conf/crappifier/calibrated_mine.yaml \\
        --high 'avg/*.tif'     # optional: check the model against (near) noise-free twins

Every 2D plane is normalised the way prediction normalises a raw input (``psr.data.normalise.
normalise_frame``: per channel, percentiles of a Gaussian-smoothed copy), so the fitted noise model
``Var = α·u + β`` is in the units training degrades clean images in. ``psr.metrics.noise`` estimates it
per plane and pooled over all planes (and per group with ``--groups``). The preset written is a Chain
of area downsampling by ``${scale}`` (identity at scale 1), ``PoissonNoise(photons = 1/α)`` and
``GaussianNoise(sigma = √β)``: β, the signal-independent variance, is attributed entirely to read noise
(it also holds quantisation and the shot noise of a background pedestal below the normalised zero; with
a linear variance model these are indistinguishable and a Gaussian reproduces their variance exactly).

Pixel noise correlated with its neighbours (a colour camera's demosaicking, a resampled frame) is
measured per plane from the same frame (``--correlation auto``, ``psr.metrics.noise.correlation_width``).
A plane whose correlation width reaches ``WHITE_SIGMA`` (0.5 px, lag-1 correlation 0.26) has its
variance estimates corrected for it, and where the median plane's does the noise steps are wrapped in
``CorrelatedNoise(sigma=…)``.

``--photons frames`` (default) writes log-uniform ranges spanning the per-plane estimates (their 10th
to 90th percentile) for photons and a uniform range for sigma, because every raw frame is normalised
by its own percentiles and so has its own noise level in normalised units: training should cover the
spread real inputs have. ``--photons median`` writes the medians of the per-plane values and
``--photons pooled`` the fit to all planes' samples pooled, which is only meaningful when the planes
share one noise level in normalised units (e.g. frames of one time series).

Bad input: one ``error: ...`` line on stderr, exit code 2, nothing written.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from psr.calibration.fitting import FitError, write_preset  # noqa: E402
from psr.calibration.presets import usage  # noqa: E402
from psr.data.normalise import NormalisationError, apply_range, frame_range  # noqa: E402
from psr.data.pairs import PairError, list_images, match_pairs, read_planes  # noqa: E402
from psr.metrics.noise import (  # noqa: E402
    WHITE_SIGMA,
    NoiseEstimationError,
    NoiseFit,
    NoiseSamples,
    correlation_width,
    fit_samples,
    laplacian_gain,
    noise_samples,
    residual_variance,
)


@dataclass
class Plane:
    """One normalised raw plane, its noise samples and its own fit."""

    name: str
    group: str
    frame: np.ndarray
    samples: NoiseSamples
    quant_step: float | None
    fit: NoiseFit
    source: Any  # the ImageFile, for pairing with --high
    index: int
    correlation: float = 0.0  # the noise's correlation width (px); 0 below WHITE_SIGMA (white noise)


def _channel(text: str) -> int | str | None:
    if text in ("none", "null"):
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Estimate a Poisson-Gaussian noise model from raw frames and write a crappifier preset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("low", nargs="+", help="raw low-quality images: files, folders or globs")
    p.add_argument(
        "--out",
        required=True,
        help="the preset YAML to write, e.g. conf/crappifier/<name>.yaml in the folder psr train runs from",
    )
    p.add_argument("--percentiles", type=float, nargs=2, default=[1.0, 99.8], help="input normalisation")
    p.add_argument("--smoothing", type=float, default=1.0, help="σ (px) of the smoothing for the percentiles")
    p.add_argument(
        "--channel", type=_channel, default=None, help="none (every channel), an index, max or mean"
    )
    p.add_argument(
        "--groups",
        default=None,
        help="a regex whose first group, searched in each plane's name, names its group (e.g. '_(\\d+)$' for"
        " NNN_C files); a pooled estimate per group is printed. Multi-channel planes group by channel",
    )
    p.add_argument(
        "--photons", choices=["frames", "median", "pooled"], default="frames", help="what the preset gets"
    )
    p.add_argument(
        "--clip", choices=["auto", "none"], default="auto", help="treat each plane's extremes as clip limits"
    )
    p.add_argument(
        "--correlation",
        choices=["auto", "none"],
        default="auto",
        help="measure the noise's spatial correlation per plane (auto) or assume white noise (none)",
    )
    p.add_argument("--bins", type=int, default=40, help="level bins")
    p.add_argument("--keep", type=float, default=0.5, help="smoothest fraction of pixels kept per level bin")
    p.add_argument("--high", nargs="+", default=None, help="noise-free twins (same names) to check the model")
    return p.parse_args(argv)


def _display(path: Path | str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _group(name: str, label: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is not None:
        m = pattern.search(name)
        if m:
            return m.group(1) if m.groups() else m.group(0)
        return "?"
    channel = [part for part in label.split(",") if part.startswith("c=")]
    return channel[0] if channel else "all"


def load_planes(args: argparse.Namespace) -> list[Plane]:
    """Read, normalise and sample every plane of the input images."""
    pattern = re.compile(args.groups) if args.groups else None
    images = list_images(list(args.low), "LOW_IMAGES")
    out = []
    for image in images:
        planes, labels = read_planes(image, args.channel, 2, 1)
        for i, (raw, label) in enumerate(zip(planes[:, 0], labels, strict=True)):
            name = image.name + (f"[{label}]" if label else "")
            low, high = frame_range(raw[None], args.percentiles, args.smoothing, f"image {image.path}")
            frame = apply_range(raw[None], low, high)[0].astype(np.float64)
            span = float(high[0] - low[0])
            clip: tuple[float | None, float | None] = (None, None)
            if args.clip == "auto":
                clip = (float(frame.min()), float(frame.max()))
            integer = bool(np.all(raw == np.round(raw)))
            quant = 1.0 / span if integer else None
            try:
                samples = noise_samples(frame, *clip)
                width = correlation_width(frame) if args.correlation == "auto" else 0.0
                if width:  # the Laplacian residual sees only laplacian_gain of correlated noise's variance
                    samples = replace(samples, residual=samples.residual / math.sqrt(laplacian_gain(width)))
                fit = fit_samples(samples, args.bins, args.keep, quant_step=quant)
            except NoiseEstimationError as err:
                raise NoiseEstimationError(f"image {image.path} {label}: {err}".replace("  ", " ")) from None
            group = _group(name, label, pattern)
            out.append(Plane(name, group, frame, samples, quant, fit, image, i, width))
    return out


def pooled(planes: Sequence[Plane], args: argparse.Namespace) -> NoiseFit:
    quants = [p.quant_step for p in planes if p.quant_step]
    return fit_samples(
        NoiseSamples.concatenate([p.samples for p in planes]),
        args.bins,
        args.keep,
        quant_step=float(np.median(quants)) if quants else None,
    )


def median_model(planes: Sequence[Plane]) -> tuple[float, float]:
    """``(photons, read σ)``: the medians of the per-plane estimates."""
    return (
        float(np.median([p.fit.photons for p in planes])),
        float(np.median([p.fit.read_sigma for p in planes])),
    )


def check_against_high(planes: Sequence[Plane], args: argparse.Namespace) -> list[str]:
    """Measured residual variance of each plane against its twin, over the model's prediction."""
    highs = list_images(list(args.high), "--high")
    lows = list({id(p.source): p.source for p in planes}.values())
    matched, _ = match_pairs(lows, highs, "stem", (), allow_unmatched=False)
    twin = {name: hi for name, _, hi in matched}
    med_photons, med_sigma = median_model(planes)
    rows, own_ratios, pool_ratios, weights = [], [], [], []
    for p in planes:
        high_planes, _ = read_planes(twin[p.source.name], args.channel, 2, 1)
        ref = high_planes[p.index, 0]
        if ref.shape != p.frame.shape:
            raise PairError(
                f"{twin[p.source.name].path} has shape {list(ref.shape)}; expected {list(p.frame.shape)}"
            )
        levels, variances, counts = residual_variance(p.frame, ref)
        own = variances / p.fit.variance(levels)
        pooled_ratio = variances / (levels.clip(0, None) / med_photons + med_sigma**2)
        w = counts / counts.sum()
        own_ratios.append(own)
        pool_ratios.append(pooled_ratio)
        weights.append(counts)
        rows.append(
            f"  {p.name:<16} measured/model {float(np.sum(w * own)):.3f} (bins {own.min():.2f}–{own.max():.2f}),"
            f" measured/median model {float(np.sum(w * pooled_ratio)):.3f}"
        )
    all_w = np.concatenate(weights).astype(np.float64)
    own_all, pool_all = np.concatenate(own_ratios), np.concatenate(pool_ratios)
    per_plane = np.array([float(np.average(r, weights=c)) for r, c in zip(own_ratios, weights, strict=True)])
    summary = (
        f"check against {len(planes)} twin(s): residual variance of the normalised frame minus its affinely fitted"
        f" twin, binned by level, over the model's prediction: per-plane model {np.average(own_all, weights=all_w):.3f}"
        f" (plane means {per_plane.min():.3f}–{per_plane.max():.3f}; bins 10–90 %:"
        f" {np.percentile(own_all, 10):.2f}–{np.percentile(own_all, 90):.2f}), one median model for all"
        f" {np.average(pool_all, weights=all_w):.3f} (bins 10–90 %: {np.percentile(pool_all, 10):.2f}–"
        f"{np.percentile(pool_all, 90):.2f})"
    )
    return [*rows, summary]


def preset_tree(planes: Sequence[Plane], pool: NoiseFit, mode: str) -> dict[str, Any]:
    def r(v: float) -> float:
        return float(f"{v:.4g}")

    if mode == "pooled":
        if not math.isfinite(pool.photons):
            raise FitError("the pooled fit found no shot noise (alpha <= 0); use --photons frames or median")
        photons: Any = r(pool.photons)
        sigma: Any = r(pool.read_sigma)
    elif mode == "median":
        med_photons, med_sigma = median_model(planes)
        photons, sigma = r(med_photons), r(med_sigma)
    else:
        ph = np.array([p.fit.photons for p in planes])
        sg = np.array([p.fit.read_sigma for p in planes])
        lo, hi = np.percentile(ph, [10, 90])
        photons = [r(lo), r(hi)] if hi > lo * 1.0001 else r(lo)
        slo, shi = np.percentile(sg, [10, 90])
        sigma = [r(slo), r(shi)] if shi > slo * 1.0001 else r(slo)
    noise: list[dict[str, Any]] = [
        {"_target_": "psr.crappifiers.PoissonNoise", "photons": photons, "log_uniform": True},
        {"_target_": "psr.crappifiers.GaussianNoise", "sigma": sigma},
    ]
    width = median_width(planes)
    if width:
        noise = [{"_target_": "psr.crappifiers.CorrelatedNoise", "sigma": round(width, 2), "steps": noise}]
    return {
        "_target_": "psr.crappifiers.Chain",
        "steps": [{"_target_": "psr.crappifiers.Downsample", "factor": "${scale}", "mode": "area"}, *noise],
    }


def median_width(planes: Sequence[Plane]) -> float:
    """The median of the planes' noise correlation widths; 0 (white noise) below ``WHITE_SIGMA``."""
    width = float(np.median([p.correlation for p in planes]))
    return width if width >= WHITE_SIGMA else 0.0


def _row(name: str, f: NoiseFit) -> str:
    return (
        f"  {name:<16} {f.photons:9.3f} {f.read_sigma:9.4f} {f.beta:10.3g} {int(f.used.sum()):5d}"
        f" {f.rel_rms:7.3f}"
    )


def run(args: argparse.Namespace, argv: Sequence[str]) -> Path:
    out = Path(args.out)
    if out.suffix not in (".yaml", ".yml"):
        raise FitError(f"--out {out} must end in .yaml")
    if not 0 < args.keep <= 1 or args.bins < 3:
        raise FitError(f"--keep must be in (0, 1] and --bins >= 3, got {args.keep} and {args.bins}")
    planes = load_planes(args)
    if not planes:
        raise FitError("no plane to calibrate from; expected at least one raw image")
    pool = pooled(planes, args)
    header_line = f"  {'plane':<16} {'photons':>9} {'read σ':>9} {'β':>10} {'bins':>5} {'relRMS':>7}"
    lines = [header_line, *(_row(p.name, p.fit) for p in planes)]
    groups: dict[str, list[Plane]] = {}
    for p in planes:
        groups.setdefault(p.group, []).append(p)
    lines.append(_row("pooled (all)", pool))
    print("\n".join(lines))
    ph = np.array([p.fit.photons for p in planes])
    sg = np.array([p.fit.read_sigma for p in planes])
    spread = (
        f"per plane: photons median {np.median(ph):.3g} (10–90 % {np.percentile(ph, 10):.3g}–"
        f"{np.percentile(ph, 90):.3g}), read σ median {np.median(sg):.3g} ({np.percentile(sg, 10):.3g}–"
        f"{np.percentile(sg, 90):.3g})"
    )
    widths = [p.correlation for p in planes]
    correlation = (
        f"noise correlation width per plane (psr.metrics.noise.correlation_width; 0 = white, below {WHITE_SIGMA}):"
        f" median {np.median(widths):.2f} px ({min(widths):.2f}–{max(widths):.2f})"
        if args.correlation == "auto"
        else "noise assumed white (--correlation none)"
    )
    spread += f"; {correlation}"
    print("psr: " + spread)
    by_group = (
        "; ".join(
            f"{g}: photons {median_model(ps)[0]:.3g} ({min(p.fit.photons for p in ps):.3g}–"
            f"{max(p.fit.photons for p in ps):.3g}), read σ {median_model(ps)[1]:.3g}"
            f" ({min(p.fit.read_sigma for p in ps):.3g}–{max(p.fit.read_sigma for p in ps):.3g})"
            for g, ps in groups.items()
        )
        if len(groups) > 1
        else ""
    )
    if by_group:
        print("psr: per group, medians (ranges) of the per-plane values: " + by_group)
    print(
        f"psr: pooled {pool}; quantisation step {pool.quant_step or 0:.3g} (Δ²/12 = {pool.quant_variance:.3g})"
    )
    check = check_against_high(planes, args) if args.high else []
    if check:
        print("\n".join(check))
    tree = preset_tree(planes, pool, args.photons)
    about = (
        f"Calibrated by scripts/calibrate_noise.py from {len(planes)} raw plane(s) without targets"
        f" ({', '.join(args.low)}), each normalised by its percentiles {args.percentiles} taken after a"
        f" Gaussian of σ {args.smoothing:g} px (psr.data.normalise). Noise model Var = α·u + β in those"
        f" units (psr.metrics.noise). Pooled: photons = 1/α = {pool.photons:.4g}, β = {pool.beta:.4g}"
        f" (read σ = √β = {pool.read_sigma:.4g}; quantisation Δ²/12 = {pool.quant_variance:.3g} of it),"
        f" {int(pool.used.sum())} level bins, relative RMS {pool.rel_rms:.3f}. {spread}."
        + (f" Per group, medians (ranges) of the per-plane values: {by_group}." if by_group else "")
        + (" " + check[-1][0].upper() + check[-1][1:] + "." if check else "")
        + " β is written as Gaussian read noise (it also holds quantisation and background shot noise)."
        + (
            " Written: 10–90 % ranges of the per-plane values (photons log-uniform), since each raw frame"
            " is normalised by its own percentiles and real inputs span that spread."
            if args.photons == "frames"
            else f" Written: the {args.photons} values."
        )
    )
    header = [
        *textwrap.wrap(about, width=108, break_on_hyphens=False),
        "Command: " + shlex.join(["python", "scripts/calibrate_noise.py", *argv]),
    ]
    write_preset(out, tree, header)
    print(f"psr: wrote {_display(out)}; {usage(out)}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        run(args, argv)
    except (FitError, PairError, NormalisationError, NoiseEstimationError, re.error) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
