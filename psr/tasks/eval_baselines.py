"""What a restoration must beat in ``evaluate.py``: interpolation for super-resolution; for denoising the
input itself and the classical denoisers (``psr.inference.classical``), with the Gaussian's width chosen
on the evaluated set."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from psr.inference import classical as classical_denoisers
from psr.tasks.common import plain
from psr.tasks.errors import ConfigError
from psr.tasks.eval_data import EvalItem

log = logging.getLogger(__name__)


def baselines(
    low: torch.Tensor,
    out_channels: int,
    size: tuple[int, ...],
    scale: int,
    classical: Sequence[str] = (),
    gaussian_sigma: float | None = None,
    timings: dict[str, float] | None = None,
    classical_noise: str = "vst",
) -> dict[str, torch.Tensor]:
    """What the model must beat: for denoising the input itself and the ``classical`` denoisers
    (``psr.inference.classical``: gaussian with ``gaussian_sigma`` px, nlm and bm3d for the noise model
    ``classical_noise``) on it; for
    super-resolution nearest, bilinear and bicubic upsampling. ``low`` is ``(1, C_in, *S)``; every
    baseline ``(1, out_channels, *size)``. The seconds each classical denoiser took are added to ``timings``.
    """
    from psr.modules.restoration import centre_channels, upsample_to

    shown = centre_channels(low.float(), out_channels)
    if scale != 1:
        return {mode: upsample_to(shown, size, mode) for mode in ("nearest", "bilinear", "bicubic")}
    out = {"identity": shown}
    plane = shown[0].numpy()
    for method in classical:
        started = time.perf_counter()
        denoised = classical_denoisers.denoise(method, plane, gaussian_sigma, classical_noise)
        out[method] = torch.from_numpy(denoised)[None]
        if timings is not None:
            timings[method] = timings.get(method, 0.0) + time.perf_counter() - started
    return out


def classical_settings(cfg: DictConfig, scale: int) -> tuple[list[str], list[float]]:
    """``classical`` and ``gaussian_sigmas`` checked: known names, positive widths, bm3d installed.

    Classical denoisers are baselines for denoising models only: at ``scale`` > 1 none runs.
    """
    chosen = plain(cfg.get("classical")) or []
    if isinstance(chosen, str):
        chosen = [chosen]
    names = [str(m) for m in chosen]
    unknown = [m for m in names if m not in classical_denoisers.METHODS]
    if unknown:
        raise ConfigError(
            f"classical={names}: {', '.join(unknown)} is not a classical denoiser; expected a list of"
            f" {', '.join(classical_denoisers.METHODS)} (or [] for none)"
        )
    names = list(dict.fromkeys(names))
    if scale != 1:
        if names:
            log.info("classical baselines are for denoising models; scale %d gets interpolation", scale)
        return [], []
    sigmas: list[float] = []
    if "gaussian" in names:
        raw = plain(cfg.get("gaussian_sigmas")) or []
        try:
            sigmas = sorted({float(v) for v in (raw if isinstance(raw, list | tuple) else [raw])})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"gaussian_sigmas={raw} is not a list of numbers") from err
        if not sigmas or sigmas[0] <= 0:
            raise ConfigError(
                f"gaussian_sigmas={raw}: the Gaussian baseline needs a non-empty list of positive widths (px)"
            )
    noise = str(cfg.get("classical_noise", "vst"))
    if noise not in classical_denoisers.NOISE_MODELS:
        raise ConfigError(
            f"classical_noise={noise} is not a noise model; expected one of"
            f" {', '.join(classical_denoisers.NOISE_MODELS)}"
        )
    if "bm3d" in names and not classical_denoisers.bm3d_available():
        raise ConfigError(
            f"classical={names}: {classical_denoisers.BM3D_MISSING}, or leave bm3d out of classical"
        )
    return names, sigmas


def choose_gaussian_sigma(
    items: Callable[[], Iterator[EvalItem]],
    out_channels: int,
    sigmas: list[float],
    percentiles: tuple[float, float],
    mode: str,
) -> tuple[float, dict[float, float]]:
    """A first, cheap pass over the set: the Gaussian width of ``sigmas`` with the best mean CARE PSNR."""
    from psr.modules.restoration import centre_channels

    seen = 0
    done = False

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        nonlocal seen, done
        for item in items():  # a bad image (NaN, no dynamic range) stops the run here, with its error
            seen += 1
            yield centre_channels(item.low.float(), out_channels)[0].numpy(), item.high[0].numpy()
        done = True

    try:
        sigma, means = classical_denoisers.select_gaussian_sigma(pairs(), sigmas, percentiles)
    except ValueError as err:
        if done and not seen:  # the set is empty: the one error the selection itself raises here
            raise ConfigError(f"data={mode}: no image to evaluate") from err
        raise
    log.info(
        "gaussian baseline: sigma %.2f px chosen on the set (mean PSNR %.2f dB over %s)",
        sigma,
        means[sigma],
        ", ".join(f"{s:g}" for s in sigmas),
    )
    return sigma, means


def gaussian_label(sigma: float) -> str:
    return f"gaussian (σ {sigma:.2f})"
