"""The model table: ``python scripts/model_zoo.py [--scale 4] [--repeats 5] [--threads N]``.

For every ``conf/model/*.yaml`` (composed with Hydra at the given scale, default settings) prints the
number of parameters, the multiply-accumulates for one 256 × 256 output patch (counted by
``torch.utils.flop_counter``; 3D models: a 16 × 256 × 256 output), and the CPU milliseconds for one such
patch (eval mode, no gradients, median of ``--repeats`` after a warm-up) as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = 256


def model_input(net: torch.nn.Module, scale: int) -> torch.Tensor:
    """A low-resolution input whose restoration is one 256² (3D: 16 × 256²) patch."""
    channels = int(getattr(net, "in_channels", 1))
    side = OUTPUT // scale
    if int(getattr(net, "spatial_dims", 2)) == 3:
        return torch.rand(1, channels, 16, side, side)
    return torch.rand(1, channels, side, side)


def measure(net: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[int, float, float]:
    """Parameters, MACs and median CPU milliseconds of one forward pass."""
    net.eval()
    params = sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            net(x)
        macs = counter.get_total_flops() / 2
        net(x)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - start) * 1000)
    return params, macs, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
    print(
        f"# {platform.machine()} {os.cpu_count()} CPUs, {args.threads} torch threads, torch {torch.__version__};"
        f" scale {args.scale}; output patch {OUTPUT}² (3D: 16 × {OUTPUT}²), batch 1, eval mode"
    )
    print("\n| model | parameters | GMACs per output patch | CPU ms per patch |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose(
                    "train", overrides=[f"model={name}", f"scale={args.scale}", f"paths.output_dir={tmp}"]
                )
            torch.manual_seed(0)
            net = instantiate(cfg.model)
            params, macs, ms = measure(net, model_input(net, args.scale), args.repeats)
            print(f"| `{name}` | {params / 1e6:.2f} M | {macs / 1e9:.2f} | {ms:.0f} |")
    print(f"\ncommand: python scripts/model_zoo.py {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
