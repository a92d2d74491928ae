"""Cost of ``data.augment`` transforms per training patch, on one core, as a loader worker pays it.

    .venv/bin/python scripts/bench_augment.py --size 128 --channels 1 --n 500

Prints the milliseconds per float32 patch for the built-in flips and rotations and for two albumentations
lists (PSSR's dihedral group with ±10° rotation and zoom; the dihedral group with an elastic deformation).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch


def _per_patch_ms(apply: Callable[[np.ndarray, int], object], patch: np.ndarray, n: int) -> float:
    apply(patch, 0)  # warm-up: imports, caches
    start = time.perf_counter()
    for i in range(n):
        apply(patch, i)
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128, help="patch edge (pixels)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--n", type=int, default=500, help="patches timed per setting")
    args = p.parse_args()
    if args.size < 8 or args.channels < 1 or args.n < 1:
        p.error("--size must be at least 8, --channels and --n at least 1")
    torch.set_num_threads(1)

    import albumentations as A

    from psr.data.augment import Augmenter

    patch = np.random.default_rng(0).uniform(0, 1, (args.channels, args.size, args.size)).astype(np.float32)

    def builtin(block: np.ndarray, seed: int) -> np.ndarray:  # PatchDataset's augment=True
        rng = np.random.default_rng(seed)
        for axis in range(1, block.ndim):
            if rng.random() < 0.5:
                block = np.flip(block, axis)
        return np.ascontiguousarray(np.rot90(block, int(rng.integers(4)), axes=(-2, -1)))

    settings: dict[str, Callable[[np.ndarray, int], object]] = {
        "built-in flips and 90° rotations (augment: true)": builtin,
        "D4 + Affine(rotate ±10°, scale 1–1.1)": Augmenter(
            [A.D4(p=1.0), A.Affine(rotate=(-10, 10), scale=(1.0, 1.1), border_mode=4, p=1.0)]
        ),
        "D4 + ElasticTransform(alpha 1, sigma 10)": Augmenter(
            [A.D4(p=1.0), A.ElasticTransform(alpha=1.0, sigma=10.0, border_mode=4, p=1.0)]
        ),
    }
    print(f"{args.channels} × {args.size}² float32 patches, one core, {args.n} each:")
    for name, apply in settings.items():
        print(f"  {name}: {_per_patch_ms(apply, patch, args.n):.2f} ms per patch")


if __name__ == "__main__":
    main()
