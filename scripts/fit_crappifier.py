"""Fit a crappifier preset to real low/high pairs and write it as a new preset.

    python scripts/fit_crappifier.py --preset poisson --pairs hagen --n-trials 60 \\
        --out conf/crappifier/fitted_hagen_poisson.yaml
    python scripts/fit_crappifier.py --preset gaussian \\
        --low ../shared/data/pairs/w2s_sim_example/input_avg1_010_0.tif \\
        --high ../shared/data/pairs/w2s_sim_example/target_avg400_010_0.tif --params steps.1.sigma=0.001:0.3:log

The residual of the real low image against its high twin is compared with that of the crappified high
image (histogram and radial spectrum; see ``psr/calibration/fitting.py`` for the distance), and Optuna's
TPE sampler searches the preset's noise and blur parameters (or those named by ``--params``). The written
YAML keeps ``${scale}`` in its resampling step, so ``train.py crappifier=<its name>`` works at any scale.
Without ``--out`` it goes to ``conf/crappifier/`` of the working folder (never into psr's own configs),
where ``psr train`` run from that folder finds it (``psr.calibration.presets``).
Bad input: one ``error: ...`` line on stderr, exit code 2, nothing written.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from psr.calibration.fitting import (  # noqa: E402
    FitError,
    PairSource,
    default_params,
    fit,
    load_preset,
    pair_source_from_config,
    parse_param,
    prepare,
    read_pairs,
    write_preset,
)
from psr.calibration.presets import find_preset, usage, user_preset  # noqa: E402
from psr.crappifiers.base import Crappifier  # noqa: E402
from psr.data.pairs import PairError  # noqa: E402


def build_crappifier(tree: dict[str, Any], scale: int = 1) -> Crappifier:
    """Instantiate a preset tree with Hydra, ``${scale}`` set to ``scale``; bad parameters raise ValueError."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"scale": scale, "crappifier": tree})
    try:
        op = instantiate(cfg.crappifier)
    except InstantiationException as err:
        cause = err.__cause__
        raise ValueError(str(cause) if cause is not None else str(err).splitlines()[0]) from err
    if not isinstance(op, Crappifier):
        raise ValueError(f"the preset builds a {type(op).__name__}; expected a psr Crappifier")
    return op


def _channel(text: str) -> int | str | None:
    if text in ("none", "null"):
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Fit a crappifier preset's noise/blur parameters to real low/high pairs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default="poisson",
        help="a preset name (./conf/crappifier, then psr's own) or a path to a preset YAML",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="a pair set of conf/evaluate/data (hagen, confocal_fmd, ...)")
    src.add_argument("--low", nargs="+", help="low-quality images: files, folders or globs")
    p.add_argument("--high", nargs="+", help="their high-quality twins (with --low)")
    p.add_argument("--match", default="order", choices=["order", "stem"], help="pair by sorted order or name")
    p.add_argument("--strip", nargs="*", default=[], help="substrings removed from names with --match stem")
    p.add_argument("--allow-unmatched", action="store_true", help="fit the matched pairs, skip the others")
    p.add_argument("--channel", type=_channel, default=None, help="none, an index, max or mean")
    p.add_argument(
        "--params",
        nargs="+",
        default=None,
        help="dotted keys to fit, KEY=LOW:HIGH[:log] or KEY (default bounds); default: the noise/blur ones",
    )
    p.add_argument("--n-trials", type=int, default=50, help="Optuna TPE trials")
    p.add_argument("--seed", type=int, default=0, help="seeds the crops, the noise and the sampler")
    p.add_argument("--crop", type=int, default=256, help="edge of the random square crops")
    p.add_argument("--crops", type=int, default=8, help="crops per pair (per plane)")
    p.add_argument(
        "--percentiles",
        type=float,
        nargs=2,
        default=[1.0, 99.8],
        help="high-image normalisation, as in training",
    )
    p.add_argument("--spread", type=float, default=0.0, help="write [v(1-s), v(1+s)] ranges instead of v")
    p.add_argument(
        "--out",
        help="output YAML (default ./conf/crappifier/fitted_<pairs>_<preset>.yaml in the working folder,"
        " where psr train run from that folder finds it as crappifier=<its name>)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-trial lines")
    args = p.parse_args(argv)
    if args.low is not None and not args.high:
        p.error("--low needs --high")
    if args.high and args.low is None:
        p.error("--high needs --low")
    return args


def _display(path: Path | str) -> str:
    """A path relative to the working directory where possible (no machine paths in the header)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def run(args: argparse.Namespace, argv: list[str]) -> Path:
    preset_path = find_preset(args.preset, ROOT / "conf" / "crappifier")
    tree, comments = load_preset(preset_path)
    source = _display(preset_path)
    params = [parse_param(t, tree, source) for t in args.params] if args.params else default_params(tree)
    if args.n_trials < 1:
        raise FitError(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.crop < 16 or args.crops < 1:
        raise FitError(f"--crop must be >= 16 and --crops >= 1, got {args.crop} and {args.crops}")
    if not 0.0 <= args.spread < 1.0:
        raise FitError(f"--spread must be in [0, 1), got {args.spread}")

    if args.pairs is not None:
        config = ROOT / "conf" / "evaluate" / "data" / f"{args.pairs}.yaml"
        if not config.is_file():
            known = [
                p.stem
                for p in sorted(config.parent.glob("*.yaml"))
                if p.stem != "pairs" and "\npairs:" in p.read_text()
            ]
            raise FitError(
                f"--pairs {args.pairs} is not a pair set of conf/evaluate/data; expected one of {known}"
            )
        pair_source = pair_source_from_config(config, ROOT)
        described = f"the {args.pairs} pairs ({_display(config)})"
        set_name = args.pairs
    else:
        pair_source = PairSource(
            low=list(args.low),
            high=list(args.high),
            match=args.match,
            strip=tuple(args.strip),
            allow_unmatched=args.allow_unmatched,
            channel=args.channel,
            names=("--low", "--high"),
        )
        described = f"low {' '.join(args.low)} vs high {' '.join(args.high)}"
        set_name = "pairs"
    out = Path(args.out) if args.out else user_preset(f"fitted_{set_name}_{preset_path.stem}")
    if out.suffix not in (".yaml", ".yml"):
        raise FitError(f"--out {out} must end in .yaml")

    t0 = time.perf_counter()
    data = prepare(read_pairs(pair_source), args.crop, args.crops, args.seed, tuple(args.percentiles))
    print(
        f"psr: {len(data)} pair(s), {args.crops} crops of {data[0].high.shape[-1]}² each"
        f" ({time.perf_counter() - t0:.1f} s to read); fitting {', '.join(str(p) for p in params)}",
        flush=True,
    )

    def progress(number: int, value: float, values: dict[str, float]) -> None:
        if not args.quiet:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            print(f"  trial {number:3d}: {value:.4f}  {shown}", flush=True)

    result = fit(
        tree, params, data, build_crappifier, args.n_trials, args.seed, args.spread, source, progress
    )
    names = [p.name for p in data]
    shown_names = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    fitted = ", ".join(f"{k} = {v:g}" for k, v in result.values.items())
    about = (
        f"Fitted by scripts/fit_crappifier.py from {source} to {len(data)} real pair(s) of {described}:"
        f" {shown_names}; {args.crops} random {data[0].high.shape[-1]}² crops per pair, seed {args.seed},"
        f" {args.n_trials} TPE trials, high images normalised by percentiles {args.percentiles}."
        " Distance (residual-histogram W1 / mean |residual| + ring-weighted mean |ln amplitude ratio| of"
        " radial spectra):"
        f" preset {result.before} -> fitted {result.after}. Fitted: {fitted}"
        + (f" (written as ±{args.spread:g} ranges)." if args.spread else ".")
    )
    header = [
        *textwrap.wrap(about, width=108, break_on_hyphens=False),
        "Command: " + shlex.join(["python", "scripts/fit_crappifier.py", *argv]),
        f"The preset {source} said:",
        *(f"  {line}" for line in comments),
    ]
    write_preset(out, result.tree, header)
    print(f"psr: distance {result.before} (preset) -> {result.after} (fitted)")
    for name in names:
        print(f"  {name}: {result.before.per_pair[name]:.4f} -> {result.after.per_pair[name]:.4f}")
    print("psr: fitted " + ", ".join(f"{k} = {v:g}" for k, v in result.values.items()))
    print(f"psr: wrote {_display(out)} ({time.perf_counter() - t0:.0f} s); {usage(out)}")
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        run(args, argv)
    except (FitError, PairError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
