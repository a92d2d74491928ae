"""The prediction pipeline: in-memory and on-disk blending agree, the pipelined path equals running every
tile sequentially, memory budgets and batch sizes, time series streamed frame by frame, and watching a
folder for new images."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from psr.inference.errors import PredictionError
from psr.inference.forward import infer
from psr.inference.images import input_statistics, open_input, plan_model_axes
from psr.inference.options import parse_bytes, resolve_batch_size
from psr.inference.predict import predict_image
from psr.inference.tiling import stitch, tile_grid
from psr.inference.watch import watch_folder
from tests.inference.conftest import LocalNet, loaded


def read_output(path: Path) -> np.ndarray:
    if path.suffix == ".tif":
        return tifffile.imread(path)
    return np.asarray(zarr.open_group(str(path), mode="r")["0"][...])


def predict(model, source: Path, output: Path, axes=None, **options) -> tuple[np.ndarray, dict]:  # noqa: ANN001, ANN003
    with open_input(source, axes) as image:
        summary = predict_image(model, image, output, **options)
    return read_output(output), summary


def sequential_reference(model, source: Path, tile: int, overlap: int) -> np.ndarray:  # noqa: ANN001
    """The straightforward way: normalise, run every tile on its own, one after the other, and stitch
    each plane in memory (no threads, no batches, no accumulator)."""
    with open_input(source, "tyx") as image:
        layout = plan_model_axes(image, 2, 1)
        low, high = input_statistics(image, layout, model.percentiles)
        planes = []
        for plane in layout.plane_indices():
            pieces = []
            for region in tile_grid(layout.spatial_shape, tile, overlap):
                x = (layout.read(image.data, plane, region).astype(np.float32) - low[0]) / (high[0] - low[0])
                pieces.append((region, infer(model.net, torch.from_numpy(x[None]))[0].numpy()))
            planes.append(stitch(pieces, layout.spatial_shape, overlap, "cosine", (model.scale,) * 2))
    return np.stack(planes)[:, 0]  # (T, Y, X)


@pytest.fixture
def series(write_zarr) -> Path:  # noqa: ANN001
    """An odd-shaped time series, (t, y, x) = (3, 37, 53), uint16."""
    data = (np.random.default_rng(0).gamma(2.0, 300.0, (3, 37, 53)) + 50).astype(np.uint16)
    return write_zarr(data, "series.zarr")


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
@pytest.mark.parametrize("denormalize", [False, True])
def test_in_memory_and_on_disk_blending_agree(
    tmp_path: Path, series: Path, suffix: str, denormalize: bool
) -> None:
    """Within 1e-4 in normalised units; back in the input's range (thousands), within float32 rounding."""
    model = loaded(LocalNet(scale=2))
    options = {"tile": 17, "overlap": 8, "batch_size": 3, "axes": "tyx", "denormalize": denormalize}
    ram, ram_summary = predict(model, series, tmp_path / f"ram{suffix}", memory_budget="1GB", **options)
    disk, disk_summary = predict(model, series, tmp_path / f"disk{suffix}", memory_budget=0, **options)
    assert (ram_summary["accumulator"], ram_summary["read_whole_planes"]) == ("ram", True)
    assert (disk_summary["accumulator"], disk_summary["read_whole_planes"]) == ("disk", False)
    assert ram.shape == disk.shape == (3, 74, 106)
    if denormalize:
        assert np.abs(ram).max() > 100  # the input's intensity range
        np.testing.assert_allclose(ram, disk, rtol=1e-5, atol=1e-3)
    else:
        np.testing.assert_allclose(ram, disk, rtol=0, atol=1e-4)


def test_pipelined_prediction_equals_running_every_tile_sequentially(tmp_path: Path, series: Path) -> None:
    """Batches of 4 over 12 tiles per plane and planes streamed through the reader and writer threads
    give what running each tile on its own and stitching gives."""
    model = loaded(LocalNet(scale=2))
    reference = sequential_reference(model, series, 17, 8)
    for budget in ("2GB", "0"):
        out = tmp_path / f"pipelined-{budget}.ome.zarr"
        pipelined, summary = predict(
            model,
            series,
            out,
            "tyx",
            tile=17,
            overlap=8,
            batch_size=4,
            denormalize=False,
            memory_budget=budget,
        )
        assert summary["tiles_per_plane"] == 20 and summary["planes"] == 3
        np.testing.assert_allclose(pipelined, reference, rtol=0, atol=1e-4)


def test_3d_in_memory_and_on_disk_blending_agree(tmp_path: Path, write_zarr) -> None:  # noqa: ANN001
    model = loaded(LocalNet(scale=2, dims=3))
    source = write_zarr(np.random.default_rng(1).random((11, 19, 23)).astype(np.float32), "volume.zarr")
    options = {"tile": (8, 12, 12), "overlap": (4, 4, 4), "denormalize": False, "axes": "zyx"}
    ram, ram_summary = predict(model, source, tmp_path / "ram.ome.zarr", **options)
    disk, disk_summary = predict(model, source, tmp_path / "disk.ome.zarr", memory_budget=1, **options)
    assert (ram_summary["accumulator"], disk_summary["accumulator"]) == ("ram", "disk")
    np.testing.assert_allclose(ram, disk, rtol=0, atol=1e-4)


def test_a_time_series_streams_frame_by_frame_with_frames_per_second_in_the_log(
    tmp_path: Path, series: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = loaded(LocalNet(scale=2))
    with caplog.at_level(logging.INFO, logger="psr.inference.predict"):
        _, summary = predict(model, series, tmp_path / "out.tif", "tyx", tile=32, overlap=8)
    assert summary["planes"] == 3 and summary["frames_per_second"] > 0
    assert summary["batch_size"] == 4  # auto on the CPU
    assert any("frame 3/3" in r.getMessage() and "frames/s" in r.getMessage() for r in caplog.records)


def test_memory_budget_and_batch_size_are_parsed_or_refused() -> None:
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("1.5GiB") == 3 * 2**29
    assert parse_bytes(4096) == parse_bytes("4096") == parse_bytes("4kib") == 4096
    for bad in ("lots", "-1GB", "2 parsecs", True):
        with pytest.raises(PredictionError, match=r"memory_budget=.* is not a memory size; expected"):
            parse_bytes(bad)  # type: ignore[arg-type]
    assert resolve_batch_size("auto", torch.device("cpu")) == 4
    assert resolve_batch_size("auto", torch.device("cuda")) == 16
    assert resolve_batch_size(8, torch.device("cpu")) == 8
    for bad in (0, "many", 2.5):
        with pytest.raises(PredictionError, match=r"batch_size="):
            resolve_batch_size(bad, torch.device("cpu"))  # type: ignore[arg-type]


def test_watch_restores_each_new_file_as_it_appears(tmp_path: Path) -> None:
    """A writer thread drops 3 TIFFs into the folder (each written in two steps) while the folder is
    watched; every result appears and equals the prediction of the same file without watching."""
    model = loaded(LocalNet(scale=2))
    incoming, restored = tmp_path / "incoming", tmp_path / "restored"
    incoming.mkdir()
    rng = np.random.default_rng(7)
    frames = [(rng.gamma(2.0, 200.0, (23 + i, 31)) + 10).astype(np.uint16) for i in range(3)]

    def acquire() -> None:
        for i, frame in enumerate(frames):
            time.sleep(0.3)
            path = incoming / f"frame_{i:03d}.tif"
            with path.open("wb") as f:  # a partial file first: the watcher must wait for the rest
                f.write(b"II*\x00")
                f.flush()
                time.sleep(0.15)
            tifffile.imwrite(path, frame)
        (incoming / "notes.txt").write_text("not an image")

    writer = threading.Thread(target=acquire)
    writer.start()
    try:
        summary = watch_folder(
            model, incoming, restored, suffix=".tif", interval=0.05, timeout=1.5, tile=16, overlap=4
        )
    finally:
        writer.join()
    assert summary["files"] == 3 and summary["frames"] == 3 and summary["skipped"] == []
    assert sorted(p.name for p in restored.iterdir()) == [f"frame_{i:03d}.tif" for i in range(3)]
    for i in range(3):
        expected, _ = predict(
            model, incoming / f"frame_{i:03d}.tif", tmp_path / f"plain_{i}.tif", tile=16, overlap=4
        )
        np.testing.assert_array_equal(read_output(restored / f"frame_{i:03d}.tif"), expected)


def test_watch_refuses_a_file_or_the_same_folder(tmp_path: Path) -> None:
    model = loaded(LocalNet(scale=2))
    (tmp_path / "a.tif").write_bytes(b"x")
    with pytest.raises(PredictionError, match="is not a folder; watch=true watches a folder"):
        watch_folder(model, tmp_path / "a.tif", tmp_path / "out", timeout=0)
    with pytest.raises(PredictionError, match="is the watched folder"):
        watch_folder(model, tmp_path, tmp_path, timeout=0)
    with pytest.raises(PredictionError, match="unknown format"):
        watch_folder(model, tmp_path, tmp_path / "out", suffix=".png", timeout=0)


def test_predict_task_watches_a_folder(compose_predict, tmp_path: Path) -> None:  # noqa: ANN001
    """``watch=true`` through the task: the model is loaded once, an image already there is restored."""
    from psr.tasks.predict import predict as predict_task
    from tests.inference.conftest import random_checkpoint

    ckpt = random_checkpoint(tmp_path / "rcan.ckpt", "model=rcan", "model.n_groups=1", "model.n_blocks=1")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    tifffile.imwrite(incoming / "a.tif", (np.random.default_rng(8).random((20, 24)) * 1000).astype(np.uint16))
    summary = predict_task(
        compose_predict(
            f"ckpt={ckpt}",
            f"input={incoming}",
            f"output={tmp_path / 'restored'}",
            "watch=true",
            "watch_timeout=0.3",
            "watch_interval=0.05",
            "watch_suffix=.ome.zarr",
            "tile=16",
            "overlap=4",
        )
    )
    assert summary["files"] == 1 and summary["frames_per_second"] > 0
    assert (tmp_path / "restored" / "a.ome.zarr").is_dir()
