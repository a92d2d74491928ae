"""Export to TorchScript, ONNX and bioimage.io: each format reproduces eager PyTorch; bad input is one
clear sentence, exit code 2 and no output.

Tiny RCAN and U-Net checkpoints are trained once per module (about a second each). The U-Net pads to a
multiple after upsampling, so its exports have a size step of 2 (``encoder_depth=3``: 8 / gcd(8, 4)).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from psr.export.common import (
    ExportError,
    compare,
    random_input,
    size_steps,
    staged_output,
)
from psr.inference.checkpoint import LoadedModel, load_checkpoint
from tests.conftest import CONF, ROOT, TINY

MODELS = {
    "rcan": ["model=rcan"],
    "unet": ["model=unet", "model.encoder_depth=3", "model.decoder_channels=[32,16,8]"],
}


def _compose(config_name: str, overrides: list[str]):  # noqa: ANN202
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    """One tiny trained checkpoint per model, in a run folder with its summary.json."""
    from psr.tasks.train import train

    paths = {}
    for name, overrides in MODELS.items():
        run = tmp_path_factory.mktemp(f"run-{name}")
        cfg = _compose(
            "train",
            [
                *TINY,
                f"paths.output_dir={run}",
                f"paths.cache_dir={cache_dir}",
                "trainer.max_epochs=1",
                *overrides,
            ],
        )
        paths[name] = Path(train(cfg)["best_checkpoint"])
    return paths


@pytest.fixture(scope="module")
def loaded(checkpoints: dict[str, Path]) -> dict[str, LoadedModel]:
    return {name: load_checkpoint(path) for name, path in checkpoints.items()}


def _other_shapes(model: LoadedModel) -> list[tuple[int, ...]]:
    """Input shapes the export did not verify itself: batch 3, sizes on the model's size grid."""
    sy, sx = size_steps(model)
    return [(3, model.in_channels, 10 * sy, 7 * sx), (1, model.in_channels, 21 * sy, 16 * sx)]


def _eager(model: LoadedModel, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.net(x).numpy()


# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_reproduces_eager_pytorch_at_two_sizes(loaded, tmp_path: Path, name: str) -> None:  # noqa: ANN001
    from psr.export.onnx import INPUT_NAME, export_onnx, onnx_session, read_metadata

    model = loaded[name]
    result = export_onnx(model, tmp_path / "model.onnx", test_size=32)
    assert len(result.max_abs_diff) == 2 and max(result.max_abs_diff.values()) <= 1e-4
    session = onnx_session(result.path)
    for i, shape in enumerate(_other_shapes(model)):
        x = random_input(shape, seed=100 + i)
        (out,) = session.run(None, {INPUT_NAME: x.numpy()})
        expected = _eager(model, x)
        assert out.shape == expected.shape == (shape[0], 1, 4 * shape[2], 4 * shape[3])
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
    meta = read_metadata(result.path)
    assert meta["scale"] == 4 and meta["size_step"] == {"y": size_steps(model)[0], "x": size_steps(model)[1]}
    assert meta["normalisation"]["percentiles"] == [1.0, 99.8]
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


@pytest.mark.parametrize("name", list(MODELS))
def test_torchscript_reloads_and_reproduces_eager_pytorch(loaded, tmp_path: Path, name: str) -> None:  # noqa: ANN001
    from psr.export.torchscript import export_torchscript, load_torchscript, read_metadata

    model = loaded[name]
    result = export_torchscript(model, tmp_path / "model.pt", test_size=32)
    assert max(result.max_abs_diff.values()) <= 1e-4
    scripted = load_torchscript(result.path)
    for i, shape in enumerate(_other_shapes(model)):
        x = random_input(shape, seed=200 + i)
        with torch.no_grad():
            out = scripted(x).numpy()
        np.testing.assert_allclose(out, _eager(model, x), rtol=0, atol=1e-4)
    assert read_metadata(result.path)["in_channels"] == 1


def test_three_dimensional_exports_have_a_dynamic_z_axis(tmp_path: Path) -> None:
    """A 3D CARE U-Net (pads Z, Y and X to a multiple of 4): ONNX and TorchScript at two volume sizes."""
    from psr.export.onnx import export_onnx
    from psr.export.torchscript import export_torchscript
    from psr.models.care_unet import CAREUNet

    target = {
        "_target_": "psr.models.care_unet.CAREUNet",
        "dims": 3,
        "depth": 2,
        "n_filter_base": 4,
        "scale": 2,
    }
    net = CAREUNet(**{k: v for k, v in target.items() if k != "_target_"}).eval().requires_grad_(False)
    model = LoadedModel(net=net, config={"model": target, "scale": 2}, path=tmp_path / "care3d.ckpt")
    assert size_steps(model) == (4, 2, 2)
    onnx_result = export_onnx(model, tmp_path / "care3d.onnx", test_size=16)
    ts_result = export_torchscript(model, tmp_path / "care3d.pt", test_size=16)
    for result in (onnx_result, ts_result):
        assert list(result.max_abs_diff) == ["2x1x8x16x16", "1x1x12x14x12"]
        assert max(result.max_abs_diff.values()) <= 1e-4


@pytest.fixture(scope="module")
def packages(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A bioimage.io package per model: RCAN with TorchScript and ONNX beside the state dict, the U-Net with
    TorchScript only (each converted format costs seconds here; the U-Net's ONNX is tested above)."""
    from psr.export.bioimageio import export_bioimageio

    out = tmp_path_factory.mktemp("bioimageio")
    weights = {"rcan": ("torchscript", "onnx"), "unet": ("torchscript",)}
    return {
        name: export_bioimageio(path, out / f"{name}.zip", test_size=32, weights=weights[name])
        for name, path in checkpoints.items()
    }


@pytest.mark.parametrize("name", list(MODELS))
def test_bioimageio_package_passes_the_bioimageio_core_model_test(packages, name: str) -> None:  # noqa: ANN001
    """The export ran bioimageio.core's ``test_model`` on the finished zip (and renamed it only then)."""
    result = packages[name]
    assert result.checks["summary"] == "passed"
    formats = ["pytorch_state_dict", "torchscript"] + (["onnx"] if name == "rcan" else [])
    for fmt in formats:
        assert result.checks[f"Reproduce test outputs from test inputs ({fmt})"] == "passed"
        for batch in (1, 2):
            for n in (0, 1, 2):
                key = f"Run {fmt} inference for inputs with batch_size: {batch} and size parameter n: {n}"
                assert result.checks[key] == "passed"
    assert all(v == "passed" for v in result.checks.values())


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_bioimageio_core_model_test_passes_on_the_written_zip(packages) -> None:  # noqa: ANN001
    import gc

    from bioimageio.core import test_model

    gc.freeze()  # bioimageio.core collects garbage after each model it unloads: keep that cheap
    try:
        summary = test_model(str(packages["unet"].path))
    finally:
        gc.unfreeze()
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details]
    tested = {d.loc[1] for d in summary.details if len(d.loc) > 1 and d.loc[0] == "weights"}
    assert tested == {"pytorch_state_dict", "torchscript"}


@pytest.mark.parametrize("name", list(MODELS))
def test_bioimageio_prediction_matches_eager_pytorch(packages, loaded, name: str) -> None:  # noqa: ANN001
    from psr.export.bioimageio import predict_with_bioimageio
    from psr.export.content import predict_normalised

    model = loaded[name]
    with zipfile.ZipFile(packages[name].path) as zf:
        raw = np.load(zf.open("test_input.npy"))
    _, expected = predict_normalised(model, raw)  # the package's percentile normalisation, then the eager net
    # psr's training normalisation, (x - p1) / (p99.8 - p1) per image and channel, gives the same input.
    x = raw[0, 0].astype(np.float64)
    low, high = np.percentile(x, [1.0, 99.8])
    with torch.no_grad():
        direct = model.net(
            torch.from_numpy(((x - low) / (high - low)).astype(np.float32))[None, None]
        ).numpy()
    np.testing.assert_allclose(direct, expected, rtol=0, atol=1e-4)
    for fmt in packages[name].info["weights"]:
        out = predict_with_bioimageio(packages[name].path, raw, weight_format=fmt)
        assert out.shape == expected.shape == (1, 1, 128, 128)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4, err_msg=fmt)


def test_bioimageio_package_content(packages, loaded) -> None:  # noqa: ANN001
    with zipfile.ZipFile(packages["unet"].path) as zf:
        names = set(zf.namelist())
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        readme = zf.read("README.md").decode()
        cover = zf.read("cover.png")
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy", "weights.pt"} <= names
    assert rdf["format_version"].startswith("0.5") and rdf["name"] == "psr-unet-poisson-x4"
    assert rdf["license"] == "BSD-3-Clause"
    assert rdf["cite"][0]["doi"] == "10.1038/s41592-021-01080-z"
    state = rdf["weights"]["pytorch_state_dict"]
    assert "parent" not in state
    assert state["architecture"]["import_from"] == "psr.models.unet"
    assert (
        state["architecture"]["callable"] == "UNet" and state["architecture"]["kwargs"]["encoder_depth"] == 3
    )
    assert rdf["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    axes = {a.get("id", a["type"]): a for a in rdf["inputs"][0]["axes"]}
    assert [a["type"] for a in rdf["inputs"][0]["axes"]] == ["batch", "channel", "space", "space"]
    assert axes["y"]["size"]["step"] == 2 and axes["y"]["size"]["min"] % 2 == 0 and axes["y"]["scale"] == 4
    out_axes = {a.get("id", a["type"]): a for a in rdf["outputs"][0]["axes"]}
    assert out_axes["x"]["size"] == {"tensor_id": "input", "axis_id": "x"}
    assert out_axes["x"]["halo"] % 4 == 0 and out_axes["x"]["halo"] >= 4
    scale_range = next(p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range")
    assert scale_range["kwargs"]["min_percentile"] == 1.0 and scale_range["kwargs"]["max_percentile"] == 99.8
    assert scale_range["kwargs"]["axes"] == ["y", "x"]  # per sample and channel
    assert cover[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("## Validation", "Downsample(factor=4", "PoissonNoise", "×4", "psr.models.unet.UNet"):
        assert text in readme


# --------------------------------------------------------------------------------------------------------
# Bad input


def _export_cfg(*overrides: str):  # noqa: ANN202
    return _compose("export", list(overrides))


def test_task_errors_are_one_sentence_and_leave_nothing(checkpoints, tmp_path: Path) -> None:  # noqa: ANN001
    from psr.tasks.errors import ConfigError
    from psr.tasks.export import export

    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    unet = checkpoints["unet"]
    cases = [
        ([f"ckpt={corrupt}"], f"checkpoint {corrupt} is not a readable PyTorch checkpoint"),
        ([f"ckpt={foreign}"], f"checkpoint {foreign} carries no psr_config"),
        ([f"ckpt={unet}", f"output={a_file}/model.onnx", "format=onnx"], f"{a_file} is a file, not a folder"),
        ([f"ckpt={unet}", "format=onnx", "test_size=33", f"output={tmp_path}/o.onnx"], "not a multiple of 2"),
        ([f"ckpt={unet}", "format=keras"], "format=keras is not an export format"),
        ([f"ckpt={unet}", "name=a/b", f"output={tmp_path}/o.zip"], "name='a/b' is not a valid model name"),
        (["format=onnx"], "ckpt has no value"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for overrides, message in cases:
        with pytest.raises(ConfigError) as info:
            export(_export_cfg(*overrides))
        assert message in str(info.value)
        assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_failed_export_leaves_no_partial_file(loaded, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import psr.export.torchscript as ts

    def mismatch(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise ExportError("the reloaded TorchScript model differs from eager PyTorch by 1 (> 0.0001)")

    monkeypatch.setattr(ts, "verify_torchscript", mismatch)
    with pytest.raises(ExportError, match="differs"):
        ts.export_torchscript(loaded["rcan"], tmp_path / "model.pt", test_size=16)
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(RuntimeError), staged_output(tmp_path / "x.zip", overwrite=False) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def _run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_bad_input_is_one_error_line_and_exit_code_2(checkpoints, tmp_path: Path) -> None:  # noqa: ANN001
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"keep me")
    for args, message in [
        (["ckpt=/no/such/run/best.ckpt"], "error: checkpoint /no/such/run/best.ckpt does not exist"),
        ([f"ckpt={checkpoints['rcan']}", "format=onnx", f"output={existing}"], "already exists"),
    ]:
        result = _run_cli(*args)
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], result.stderr
        assert "Traceback" not in result.stderr
    assert existing.read_bytes() == b"keep me"


def test_default_output_is_outputs_export_name(checkpoints, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from psr.tasks.export import export, summary_line

    monkeypatch.chdir(tmp_path)
    summary = export(_export_cfg(f"ckpt={checkpoints['rcan']}", "format=torchscript", "test_size=16"))
    assert summary["output"] == str(Path("outputs") / "export" / "psr-rcan-poisson-x4.pt")
    assert (tmp_path / summary["output"]).is_file()
    assert summary_line(summary).startswith(
        "psr: wrote outputs/export/psr-rcan-poisson-x4.pt (torchscript, RCAN ×4)"
    )


def test_compare_tolerates_float32_rounding_relative_to_the_output_magnitude() -> None:
    """``atol`` in the normalised range, plus ``rtol`` of larger outputs (an untrained ResNet-34 U-Net's reach
    30, where onnxruntime and PyTorch differ by 1.4e-4); NaN and wrong shapes never pass."""
    large = torch.full((1, 1, 4, 4), 30.0)
    assert compare(large, large + 1.4e-4, "m", (1, 1, 4, 4)) == pytest.approx(1.4e-4, rel=1e-2)
    small = torch.full((1, 1, 4, 4), 0.5)
    with pytest.raises(ExportError, match=r"differs from eager PyTorch by 0.00014 .* shape \[1, 1, 4, 4\]"):
        compare(small, small + 1.4e-4, "m", (1, 1, 4, 4))
    with pytest.raises(ExportError, match="differs"):
        compare(small, small * float("nan"), "m", (1, 1, 4, 4))
    with pytest.raises(ExportError, match="returns shape"):
        compare(small, small[..., :2], "m", (1, 1, 4, 4))


def test_onnx_traces_every_dynamic_axis_at_two_steps_or_more() -> None:
    """``torch.export`` fixes a dimension traced at size 1: batch and size-step blocks start at 2."""
    from psr.export.onnx import trace_shape
    from psr.models.unet import UNet

    net = UNet(1, 1, 4, encoder_depth=5, decoder_channels=[8] * 5)  # pads to 32 after ×4: Y/X step 8
    model = LoadedModel(net=net, config={"scale": 4}, path=Path("m.ckpt"))
    assert trace_shape(model, (1, 1, 8, 8)) == (2, 1, 16, 16)
    assert trace_shape(model, (2, 1, 24, 16)) == (2, 1, 24, 16)
