r"""One Markdown table from evaluate.py summaries: per real pair set, the raw input, the classical
denoisers and the model, mean CARE PSNR / SSIM (the README's "Does it work on real data?" table).

    python scripts/real_data_table.py outputs/evaluate/*/*/summary.json
    python scripts/real_data_table.py --per-image outputs/evaluate/<date>/<time>-w2s_dev/metrics.csv

Each summary is one row, named by the evaluated set (``name`` in the summary); a method the run did not
score shows as "—". ``--per-image`` reads a run's ``metrics.csv`` instead and prints, per image, the
model's PSNR minus each baseline's, and how many images the model wins; ``--group-by REGEX`` adds one
row per group of images (the regex's first group applied to the image name, e.g. ``_(\d+)$`` for the
W2S channel in ``071_2``): mean PSNR of the model and its mean gain over each baseline.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

COLUMNS = ("identity", "gaussian", "nlm", "bm3d", "model")
HEADERS = ("raw frame", "Gaussian (σ on the set)", "NLM (VST)", "BM3D (VST)", "psr")


def _cell(method: dict[str, float] | None, sigma: float | None = None) -> str:
    if method is None or method.get("psnr") is None:
        return "—"
    text = f"{method['psnr']:.2f} / {method['ssim']:.3f}"
    return f"{text} (σ {sigma:g})" if sigma is not None else text


def table(summaries: list[dict]) -> str:
    lines = [
        "| set | images | " + " | ".join(HEADERS) + " | psr − best classical |",
        "|---|---:|" + "---:|" * (len(HEADERS) + 1),
    ]
    for s in summaries:
        methods = {m["method"]: m for m in s["methods"]}
        cells = [
            _cell(methods.get(name), s.get("gaussian_sigma") if name == "gaussian" else None)
            for name in COLUMNS
        ]
        classical = [methods[m]["psnr"] for m in ("gaussian", "nlm", "bm3d") if m in methods]
        gain = (
            f"{methods['model']['psnr'] - max(classical):+.2f} dB"
            if classical and "model" in methods
            else "—"
        )
        lines.append(
            f"| {s.get('name', s.get('data'))} | {s['n_images']} | " + " | ".join(cells) + f" | {gain} |"
        )
    return "\n".join(lines)


def per_image(path: Path, group_by: str | None = None) -> str:
    psnr: dict[str, dict[str, float]] = defaultdict(dict)
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["psnr"]:  # the ground truth's own row (FRC only) has no PSNR
                psnr[row["image"]][row["method"]] = float(row["psnr"])
    baselines = [m for m in ("identity", "gaussian", "nlm", "bm3d") if any(m in v for v in psnr.values())]
    lines = ["| image | psr PSNR | " + " | ".join(f"psr − {b}" for b in baselines) + " |"]
    lines.append("|---|---:|" + "---:|" * len(baselines))
    wins = dict.fromkeys(baselines, 0)
    for image, values in psnr.items():
        gains = [values["model"] - values[b] for b in baselines]
        for b, g in zip(baselines, gains, strict=True):
            wins[b] += g > 0
        lines.append(f"| {image} | {values['model']:.2f} | " + " | ".join(f"{g:+.2f}" for g in gains) + " |")
    lines.append("")
    lines.append(", ".join(f"psr beats {b} on {wins[b]}/{len(psnr)} images" for b in baselines))
    if group_by:
        lines += ["", *_groups(psnr, baselines, group_by)]
    return "\n".join(lines)


def _groups(psnr: dict[str, dict[str, float]], baselines: list[str], pattern: str) -> list[str]:
    """One row per group of images (``pattern``'s first group in the image name): the model's mean PSNR
    and its mean gain over each baseline; images the pattern does not match form the group "other"."""
    regex = re.compile(pattern)
    members: dict[str, list[str]] = defaultdict(list)
    for image in psnr:
        found = regex.search(image)
        members[(found.group(1) if found.groups() else found.group(0)) if found else "other"].append(image)
    lines = ["| group | images | psr PSNR | " + " | ".join(f"psr − {b}" for b in baselines) + " |"]
    lines.append("|---|---:|---:|" + "---:|" * len(baselines))
    for group in sorted(members):
        images = members[group]
        model = sum(psnr[i]["model"] for i in images) / len(images)
        gains = [sum(psnr[i]["model"] - psnr[i][b] for i in images) / len(images) for b in baselines]
        lines.append(
            f"| {group} | {len(images)} | {model:.2f} | " + " | ".join(f"{g:+.2f}" for g in gains) + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="evaluate.py summary.json files (or metrics.csv)")
    parser.add_argument("--per-image", action="store_true", help="per-image gains from one metrics.csv")
    parser.add_argument(
        "--group-by",
        metavar="REGEX",
        help="with --per-image: mean gains per group of images, the group being the regex's first group"
        " in the image name (e.g. '_(\\d+)$' for W2S channels)",
    )
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not found; expected evaluate.py outputs", file=sys.stderr)
        return 2
    if args.per_image:
        try:
            print(per_image(args.files[0], args.group_by))
        except re.error as err:
            print(f"error: --group-by {args.group_by!r} is not a regular expression ({err})", file=sys.stderr)
            return 2
        return 0
    try:
        summaries = [json.loads(f.read_text()) for f in args.files]
        print(table(summaries))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        print(f"error: not an evaluate.py summary ({type(err).__name__}: {err})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
