"""``predict.py`` end to end on a tiny trained checkpoint, and every bad input as one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from psr.io.omezarr import write_ome_zarr_collection
from psr.tasks.errors import ConfigError
from psr.tasks.predict import predict
from tests.conftest import ROOT
from tests.inference.conftest import random_checkpoint

SCALE = 4  # the tiny trained checkpoint's scale


def leftovers(folder: Path) -> list[str]:
    """Temporary folders a prediction would leave beside its output."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def omezarr_level0(path: Path) -> tuple[np.ndarray, dict]:
    """Read an output back with the ome-zarr reader: level-0 pixels and its multiscales metadata."""
    node = next(iter(Reader(parse_url(str(path)))()))
    return np.asarray(node.data[0]), node.metadata


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    image = (rng.gamma(2.0, 300.0, (45, 67)) + 100).astype(np.uint16)
    tifffile.imwrite(
        folder / "image.tif", image, imagej=True, resolution=(1 / 0.2, 1 / 0.2), metadata={"unit": "um"}
    )
    series = (rng.random((3, 37, 41)) * 4000).astype(np.uint16)
    tifffile.imwrite(folder / "series.tif", series, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(folder / "stack.tif", np.concatenate([series] * 5))  # 15 pages, unnamed axis: 'qyx'
    stores = write_ome_zarr_collection(
        folder / "image.ome.zarr", [image[None]], "cyx", pixel_size={"y": 0.1, "x": 0.1}
    )
    return {
        "tiff": folder / "image.tif",
        "series": folder / "series.tif",
        "stack": folder / "stack.tif",
        "omezarr": stores / "img_000",
    }


def test_2d_tiff_to_ome_zarr(compose_predict, trained_checkpoint: Path, inputs, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "restored.ome.zarr"
    summary = predict(
        compose_predict(
            f"ckpt={trained_checkpoint}", f"input={inputs['tiff']}", f"output={out}", "tile=32", "overlap=8"
        )
    )
    data, meta = omezarr_level0(out)
    assert data.shape == (45 * SCALE, 67 * SCALE) and data.dtype == np.float32
    assert np.isfinite(data).all()
    scale = meta["coordinateTransformations"][0][0]["scale"]
    assert scale == pytest.approx([0.2 / SCALE, 0.2 / SCALE])
    assert [a.get("unit") for a in meta["axes"]] == ["micrometer", "micrometer"]
    assert summary["tiles_per_plane"] == 6
    assert leftovers(tmp_path) == []


def test_time_series_tiff_to_tiff(compose_predict, trained_checkpoint: Path, inputs, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "restored.tif"
    predict(
        compose_predict(
            f"ckpt={trained_checkpoint}", f"input={inputs['series']}", f"output={out}", "tile=24", "overlap=8"
        )
    )
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        data = tif.asarray()
    assert data.shape == (3, 37 * SCALE, 41 * SCALE) and data.dtype == np.float32
    assert np.isfinite(data).all() and data.std(axis=(1, 2)).min() > 0


def test_ome_zarr_to_ome_zarr_and_tiff(
    compose_predict, trained_checkpoint: Path, inputs, tmp_path: Path
) -> None:  # noqa: ANN001
    out = tmp_path / "restored.zarr"
    predict(
        compose_predict(
            f"ckpt={trained_checkpoint}", f"input={inputs['omezarr']}", f"output={out}", "tta=true"
        )
    )
    data, meta = omezarr_level0(out)
    assert data.shape == (1, 45 * SCALE, 67 * SCALE)
    assert [a["name"] for a in meta["axes"]] == ["c", "y", "x"]
    assert meta["coordinateTransformations"][0][0]["scale"] == pytest.approx([1.0, 0.1 / SCALE, 0.1 / SCALE])
    assert zarr.open_group(str(out), mode="r").attrs["ome"]["version"] == "0.5"
    tif = tmp_path / "restored.tiff"
    predict(
        compose_predict(
            f"ckpt={trained_checkpoint}", f"input={inputs['omezarr']}", f"output={tif}", "tta=true"
        )
    )
    with tifffile.TiffFile(tif) as t:
        # ImageJ drops the single channel axis
        assert t.series[0].shape == (45 * SCALE, 67 * SCALE) and t.series[0].dtype == np.float32
        assert t.imagej_metadata["unit"] == "um"
        num, den = t.pages.first.tags["XResolution"].value
        assert den / num == pytest.approx(0.1 / SCALE, rel=1e-4)
        np.testing.assert_allclose(t.asarray(), data[0], rtol=1e-5, atol=1e-3)


def test_existing_output_is_refused_unless_overwrite(
    compose_predict, trained_checkpoint: Path, inputs, tmp_path: Path
) -> None:  # noqa: ANN001
    out = tmp_path / "out.tif"
    out.write_bytes(b"keep me")
    args = [f"ckpt={trained_checkpoint}", f"input={inputs['tiff']}", f"output={out}"]
    with pytest.raises(ConfigError, match=f"output {out} already exists; pass overwrite=true"):
        predict(compose_predict(*args))
    assert out.read_bytes() == b"keep me" and leftovers(tmp_path) == []
    predict(compose_predict(*args, "overwrite=true"))
    assert tifffile.imread(out).shape == (45 * SCALE, 67 * SCALE)
    assert leftovers(tmp_path) == []


def _bad_checkpoints(folder: Path) -> dict[str, Path]:
    (folder / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"weights": torch.zeros(3)}, folder / "dict.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(3)}}, folder / "foreign.ckpt")
    return {k: folder / f"{k}.ckpt" for k in ("random", "dict", "foreign")}


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("random", "is not a readable PyTorch checkpoint"),
        ("dict", "has no state_dict"),
        ("foreign", "carries no psr_config"),
    ],
)
def test_corrupt_or_foreign_checkpoint(
    compose_predict, inputs, tmp_path: Path, which: str, message: str
) -> None:  # noqa: ANN001
    ckpt = _bad_checkpoints(tmp_path)[which]
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(ConfigError, match=f"checkpoint {ckpt} {message}"):
        predict(compose_predict(f"ckpt={ckpt}", f"input={inputs['tiff']}", f"output={out}"))
    assert not out.exists() and leftovers(tmp_path) == []


def _readonly_folder(tmp_path: Path) -> Path:
    """A folder no one may create entries in: permission bits for users; for root, which ignores
    them, sysfs (read-only even to root)."""
    if os.geteuid() != 0:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    probe = Path("/sys") / f"psr-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return probe.parent
    probe.rmdir()
    pytest.skip("running as root without a read-only folder to write into")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "stack",
            r"2D model predicts \(Y, X\) planes but input .*stack.tif has axes 'qyx'.*no t or z axis.*axes=tyx",
        ),
        ("rcan3d", r"3D model predicts \(Z, Y, X\) stacks but input .*image.tif has axes 'yx'.*no z axis"),
        ("channels", r"has 1 channel\(s\) but the model expects 3 \(model.in_channels\)"),
        ("missing", r"input .*nothing.tif does not exist"),
        ("under_file", r"cannot be written: .*image.tif is a file, not a folder"),
        ("readonly", r"cannot be written: folder .* is not writable"),
        ("format", r"output=.*out.png has an unknown format; expected a name ending in .ome.zarr"),
        ("tile", r"overlap=32 is more than half of tile=40"),
    ],
)
def test_bad_input_is_one_clear_error_and_leaves_nothing(
    compose_predict,
    trained_checkpoint: Path,
    inputs,
    tmp_path: Path,
    case: str,
    message: str,  # noqa: ANN001
) -> None:
    ckpt, source, out = trained_checkpoint, inputs["tiff"], tmp_path / "out.ome.zarr"
    extra: list[str] = []
    if case == "stack":
        source = inputs["stack"]
    elif case == "rcan3d":
        ckpt = random_checkpoint(tmp_path / "3d.ckpt", "model=rcan3d", "model.n_groups=1", "model.n_blocks=1")
    elif case == "channels":
        ckpt = random_checkpoint(tmp_path / "rgb.ckpt", "model.in_channels=3", "model.out_channels=3")
    elif case == "missing":
        source = tmp_path / "nothing.tif"
    elif case == "under_file":
        (tmp_path / "image.tif").write_bytes(b"a file")
        out = tmp_path / "image.tif" / "out.ome.zarr"
    elif case == "readonly":
        out = _readonly_folder(tmp_path) / "psr-test-out.ome.zarr"
    elif case == "format":
        out = tmp_path / "out.png"
    elif case == "tile":
        extra = ["tile=40"]
    with pytest.raises(ConfigError, match=message):
        predict(compose_predict(f"ckpt={ckpt}", f"input={source}", f"output={out}", *extra))
    assert not out.exists()
    if out.parent.is_dir():
        assert leftovers(out.parent) == []


def test_cli_bad_checkpoint_exits_2_with_one_error_line(inputs, tmp_path: Path) -> None:  # noqa: ANN001
    ckpt = _bad_checkpoints(tmp_path)["random"]
    out = tmp_path / "out.ome.zarr"
    result = subprocess.run(
        [
            sys.executable,
            "predict.py",
            f"ckpt={ckpt}",
            f"input={inputs['tiff']}",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: checkpoint {ckpt} is not a readable PyTorch checkpoint (UnpicklingError)"]
    assert "Traceback" not in result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_missing_required_option_names_it(compose_predict, inputs) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=r"output has no value; set it on the command line \(output=...\)"):
        predict(compose_predict("ckpt=x.ckpt", f"input={inputs['tiff']}"))
