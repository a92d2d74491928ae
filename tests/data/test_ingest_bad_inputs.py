"""Ingest's bad inputs: each stops with a clear error and leaves no store (in the library and on the
command line, exit code 2), an interrupt leaves nothing, bad options are refused; and real data, and a store
another job finished meanwhile.

Round trips, the manifest, idempotence and bounded memory are in ``test_ingest.py``, whose ``RNG`` and
helpers this module shares (one random stream for both, drawn in the order the tests run).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from psr.data import ingest as ingest_mod
from psr.data.ingest import IngestError, IngestOptions, ingest, parse_channel, parse_chunks
from psr.data.ingest import write as ingest_write
from psr.io.omezarr import discover_images
from tests.conftest import ROOT, SHARED_DATA
from tests.data.test_ingest import RNG, _no_leftovers, _write_tiffs

# --------------------------------------------------------------------------------------------- bad inputs


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], dict[str, Any], str]]:
    """name -> (sources, ingest kwargs, regex the error must match)."""
    tifffile.imwrite(tmp_path / "good.tif", RNG.integers(0, 255, (64, 64), dtype=np.uint8))
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + bytes(RNG.integers(0, 255, 200, dtype=np.uint8)))
    tifffile.imwrite(
        tmp_path / "full.tif", RNG.integers(0, 255, (4, 64, 64), dtype=np.uint16), compression="zlib"
    )
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile: zero-size arrays make nonconformant TIFFs
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 32), np.uint8))
    nan = RNG.random((64, 64), dtype=np.float32)
    nan[60, 5] = np.nan  # in the last band: found while writing, after earlier bands were written
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    inf = RNG.random((64, 64), dtype=np.float32)
    inf[3, 7] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", inf)
    Image.fromarray(RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    tifffile.imwrite(tmp_path / "tiny.tif", np.zeros((8, 40), np.uint8))
    (tmp_path / "image.xyz").write_bytes(b"XYZ")
    (tmp_path / "missing.yaml").write_text("images:\n  - {path: nothere.tif, split: train}\n")
    (tmp_path / "noglob.yaml").write_text('images:\n  - {path: "clean/*.tif"}\n')
    p = tmp_path
    return {
        "corrupt": ([str(p / "corrupt.tif")], {}, r"corrupt.tif: not a readable TIFF"),
        "truncated": ([str(p / "truncated.tif")], {}, r"truncated.tif: TIFF is truncated or corrupt"),
        "zero-size": ([str(p / "empty.tif")], {}, r"empty.tif: the image is empty \(shape \(0, 32\)"),
        "nan": ([str(p / "nan.tif")], {"block_bytes": 1}, r"nan.tif: found nan at y=60, x=5"),
        "inf": ([str(p / "inf.tif")], {}, r"inf.tif: found inf at y=3, x=7"),
        "rgb": (
            [str(p / "rgb.png")],
            {"options": IngestOptions(single_channel=True)},
            r"rgb.png: found 3 RGB samples where one channel is expected; pass --channel",
        ),
        "too-small": ([str(p / "tiny.tif")], {}, r"tiny.tif: the image is 8x40 pixels.*--min-size 16"),
        "unknown-format": ([str(p / "image.xyz")], {}, r"image.xyz' has an unknown format '.xyz'"),
        "missing-file": ([], {"manifest": p / "missing.yaml"}, r"'nothere.tif' does not exist"),
        "empty-glob": ([], {"manifest": p / "noglob.yaml"}, r"'clean/\*.tif' matches no image"),
        "good-then-bad": ([str(p / "good.tif"), str(p / "nan.tif")], {}, r"nan.tif: found nan"),
    }


BAD = [
    "corrupt",
    "truncated",
    "zero-size",
    "nan",
    "inf",
    "rgb",
    "too-small",
    "unknown-format",
    "missing-file",
    "empty-glob",
    "good-then-bad",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_clear_error_and_no_store(tmp_path: Path, case: str) -> None:
    sources, kwargs, pattern = _bad_inputs(tmp_path)[case]
    with pytest.raises(IngestError, match=pattern):
        ingest(sources or None, tmp_path / "out.ome.zarr", **kwargs)
    assert _no_leftovers(tmp_path) == []


def test_interrupt_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_tiffs(tmp_path / "in", ["a.tif", "b.tif"])
    calls = []

    def interrupted(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = ingest_write.read_block
    monkeypatch.setattr(ingest_write, "read_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest([tmp_path / "in"], tmp_path / "out.ome.zarr")
    assert len(calls) == 2 and _no_leftovers(tmp_path) == []


def test_option_parsing() -> None:
    assert parse_channel("2") == 2 and parse_channel("MAX") == "max"
    assert parse_chunks("16,256,256") == (16, 256, 256)
    with pytest.raises(IngestError, match="--channel"):
        IngestOptions(channel="median")
    with pytest.raises(IngestError, match="--axes"):
        IngestOptions(axes="zqx")
    with pytest.raises(IngestError, match="--unit: unknown length unit 'furlong'"):
        IngestOptions(unit="furlong")


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (None, ""),  # not a TIFF at all
        (np.eye(32, dtype=bool), "pixel type bool is not supported (expected integer or float intensities"),
        (np.eye(32, dtype=np.complex64), "pixel type complex64 is not supported"),
    ],
    ids=["corrupt", "bool", "complex"],
)
def test_cli_bad_input_exits_2_without_store(tmp_path: Path, pixels: np.ndarray | None, message: str) -> None:
    if pixels is None:
        (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    else:
        tifffile.imwrite(tmp_path / "broken.tif", pixels)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ingest.py"), "broken.tif", "-o", "out.ome.zarr"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.tif" in lines[0]
    assert message in lines[0]
    assert _no_leftovers(tmp_path) == []


@pytest.mark.realdata
def test_real_w2s_tiffs(tmp_path: Path) -> None:
    folder = SHARED_DATA / "clean" / "w2s_avg400_train"
    if not folder.is_dir():
        pytest.skip("../shared/data is absent")
    out = ingest([str(folder / "00[12]_*.tif")], tmp_path / "w2s.ome.zarr", options=IngestOptions(levels=1))
    refs = discover_images(out.path)
    assert len(refs) == 6 and all(r.shape == (512, 512) and r.dtype == "uint8" for r in refs)
    np.testing.assert_array_equal(refs[0].open()[...], tifffile.imread(folder / "001_0.tif"))


def test_a_store_finished_meanwhile_by_another_job_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two parallel jobs ingesting the same sources: the one that finishes second keeps the first one's store
    (its readers may already be using it) instead of swapping it out."""
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, RNG.integers(0, 255, (32, 32), dtype=np.uint8))
    out = tmp_path / "cache" / "ingest.ome.zarr"
    real_write = ingest_write._write_store

    def other_job_finishes_first(output: Path, the_plan: Any, *args: Any) -> int:
        real_write(output, the_plan, *args)  # the other job, done while this one was writing
        (output / "other-job").write_text("x")
        return real_write(output, the_plan, *args)

    monkeypatch.setattr(ingest_write, "_write_store", other_job_finishes_first)
    result = ingest_mod.ingest([str(src)], out, overwrite=True)
    assert not result.up_to_date
    assert (out / "other-job").exists()  # the other job's store is still the one in place
    assert not list(out.parent.glob(".*tmp-*")) and not list(out.parent.glob(".*old-*"))
