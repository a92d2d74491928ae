"""scripts/real_data_table.py: evaluate.py summaries → the README's real-data table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("real_data_table", ROOT / "scripts" / "real_data_table.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _summary(name: str, psnr: dict[str, float]) -> dict:
    return {
        "name": name,
        "n_images": 3,
        "gaussian_sigma": 2.0,
        "methods": [{"method": m, "psnr": v, "ssim": v / 40} for m, v in psnr.items()],
    }


def test_one_row_per_set_with_the_gain_over_the_best_classical(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    files = []
    for name, psnr in (
        ("w2s_dev", {"model": 32.0, "identity": 19.0, "gaussian": 30.9, "nlm": 30.0, "bm3d": 31.5}),
        ("hagen", {"model": 30.0, "identity": 24.0, "gaussian": 30.25, "nlm": 29.0}),
    ):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(_summary(name, psnr)))
    assert _module().main([str(f) for f in files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| w2s_dev | 3 | 19.00 / 0.475 | 30.90 / 0.772 (σ 2) |")
    assert out[2].endswith("| 32.00 / 0.800 | +0.50 dB |")  # over BM3D, the best classical
    assert "| — |" in out[3] and out[3].endswith("| -0.25 dB |")  # no BM3D row; loses to the Gaussian


def test_per_image_gains_and_missing_files(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    metrics = tmp_path / "metrics.csv"
    rows = ["image,method,psnr", "a,model,30", "a,gaussian,29", "b,model,28", "b,gaussian,28.5"]
    rows += ["a,ground_truth,", "b,ground_truth,"]  # evaluate.py's FRC-only rows of the target
    metrics.write_text("\n".join(rows) + "\n")
    module = _module()
    assert module.main(["--per-image", str(metrics)]) == 0
    out = capsys.readouterr().out
    assert "| a | 30.00 | +1.00 |" in out and "| b | 28.00 | -0.50 |" in out
    assert "psr beats gaussian on 1/2 images" in out
    assert module.main([str(tmp_path / "nope.json")]) == 2
    assert "nope.json not found" in capsys.readouterr().err


def test_per_group_gains(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    metrics = tmp_path / "metrics.csv"
    rows = ["image,method,psnr"]
    for image, model, gauss in (("071_0", 30, 29), ("072_0", 32, 30), ("071_1", 28, 28.5), ("x", 20, 19)):
        rows += [f"{image},model,{model}", f"{image},gaussian,{gauss}"]
    metrics.write_text("\n".join(rows) + "\n")
    module = _module()
    assert module.main(["--per-image", "--group-by", r"_(\d+)$", str(metrics)]) == 0
    out = capsys.readouterr().out
    assert "| 0 | 2 | 31.00 | +1.50 |" in out  # mean of +1 and +2
    assert "| 1 | 1 | 28.00 | -0.50 |" in out
    assert "| other | 1 | 20.00 | +1.00 |" in out
    assert module.main(["--per-image", "--group-by", "(", str(metrics)]) == 2
    assert "is not a regular expression" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["{", '{"methods": 3}'])
def test_a_file_that_is_not_a_summary_is_one_error(tmp_path: Path, capsys, text: str) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert _module().main([str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: not an evaluate.py summary")
