"""The napari reader without napari: psr's stores and predictions as layer data tuples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import zarr

from psr.inference.predict import predict_file
from psr.io.omezarr import write_ome_zarr_collection
from psr.napari.reader import napari_get_reader


def test_a_collection_store_gives_one_multiscale_layer_per_image_with_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 4000, (2, 64, 48), dtype=np.uint16) for _ in range(2)]
    store = write_ome_zarr_collection(
        tmp_path / "set.ome.zarr",
        images,
        "cyx",
        names=["a", "b"],
        pixel_size={"y": 0.2, "x": 0.1},
        levels=2,
        channel_names=["dna", "actin"],
    )
    reader = napari_get_reader(str(store))
    assert reader is not None
    layers = reader(str(store))
    assert [kw["name"] for _, kw, _ in layers] == [
        ["set.ome.zarr/a dna", "set.ome.zarr/a actin"],
        ["set.ome.zarr/b dna", "set.ome.zarr/b actin"],
    ]
    for (data, kwargs, kind), image in zip(layers, images, strict=True):
        assert kind == "image" and kwargs["multiscale"] and kwargs["channel_axis"] == 0
        assert [level.shape for level in data] == [(2, 64, 48), (2, 32, 24)]
        np.testing.assert_array_equal(np.asarray(data[0][...]), image)
        assert kwargs["scale"] == [0.2, 0.1]
        assert kwargs["metadata"]["unit"] == "micrometer"


def test_a_prediction_opens_at_its_finer_scale_with_its_provenance(
    checkpoint: Path, image: np.ndarray, tmp_path: Path
) -> None:
    tifffile.imwrite(tmp_path / "cells.tif", image)
    out = tmp_path / "cells_x2.ome.zarr"
    predict_file(checkpoint, tmp_path / "cells.tif", out, tile=32, overlap=8, device="cpu")
    (layer,) = napari_get_reader(str(out))(str(out))  # type: ignore[misc]
    data, kwargs, _ = layer
    level0 = data[0] if isinstance(data, list) else data
    assert level0.shape == (90, 122)
    assert kwargs["scale"] == [0.5, 0.5]  # no physical size: the input's pixel grid is the unit
    assert kwargs["metadata"]["psr"]["checkpoint"] == str(checkpoint)
    # one channel, no c axis: the stored omero window is still the layer's contrast
    attrs = dict(zarr.open_group(out, mode="r").attrs)
    (channel,) = attrs.get("ome", attrs)["omero"]["channels"]
    assert kwargs["contrast_limits"] == [channel["window"]["start"], channel["window"]["end"]]


def test_other_paths_are_left_to_other_readers(tmp_path: Path, image: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "cells.tif", image)
    assert napari_get_reader(str(tmp_path / "cells.tif")) is None
    assert napari_get_reader(str(tmp_path / "missing.zarr")) is None
    assert napari_get_reader(str(tmp_path)) is None  # a plain folder
