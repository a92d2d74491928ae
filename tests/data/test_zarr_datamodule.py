from pathlib import Path

import numpy as np
import pytest
import torch

from psr.data.zarr import ZarrDataModule
from psr.io.omezarr import write_ome_zarr_collection


def _images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((1, size, size)) * 1000 + 100).astype(np.uint16) for _ in range(n)]


def test_patches_are_normalised_and_split_by_image(tmp_path) -> None:  # noqa: ANN001
    store = write_ome_zarr_collection(tmp_path / "set.ome.zarr", _images(5), "cyx")
    dm = ZarrDataModule(str(store), patch_size=16, scale=4, batch_size=4, samples_per_epoch=8, val_samples=4)
    dm.setup()
    train_names = {s.ref.name for s in dm.train_sources}
    val_names = {s.ref.name for s in dm.val_sources}
    assert len(train_names) == 4 and len(val_names) == 1 and not train_names & val_names
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 1, 16, 16) and batch.dtype == torch.float32
    assert -0.2 < float(batch.mean()) < 1.2


def test_validation_patches_are_identical_every_epoch(tmp_path) -> None:  # noqa: ANN001
    store = write_ome_zarr_collection(tmp_path / "set.ome.zarr", _images(4), "cyx")
    dm = ZarrDataModule(str(store), patch_size=16, batch_size=4, val_samples=8, val_fraction=0.5)
    dm.setup()
    first = torch.cat(list(dm.val_dataloader()))
    second = torch.cat(list(dm.val_dataloader()))
    assert torch.equal(first, second)
    assert not torch.equal(first[0], first[1])
    loader = dm.train_dataloader()
    a = next(iter(loader))
    loader.sampler.set_epoch(1)  # type: ignore[attr-defined]  # as Lightning does each epoch
    b = next(iter(loader))
    assert not torch.equal(a, b)  # training patches are redrawn every epoch


def test_single_image_is_split_by_rows(write_zarr) -> None:  # noqa: ANN001
    path = write_zarr(np.arange(128 * 64, dtype=np.float32).reshape(128, 64))
    dm = ZarrDataModule(str(path), patch_size=16, val_fraction=0.25, val_samples=16)
    dm.setup()
    (train,), (val,) = dm.train_sources, dm.val_sources
    assert train.y_range == (0, 96) and val.y_range == (96, 128)
    # Every validation patch comes from the held-out rows: values there are >= 96 * 64.
    lo, hi = val.low[0], val.high[0]
    raw = torch.cat(list(dm.val_dataloader())) * (hi - lo) + lo
    assert float(raw.min()) >= 96 * 64 - 1e-2


def test_percentile_normalisation_per_image(write_zarr) -> None:  # noqa: ANN001
    image = np.linspace(0, 1000, 64 * 64, dtype=np.float32).reshape(64, 64)
    dm = ZarrDataModule(
        str(write_zarr(image)), patch_size=16, percentiles=(0, 100), val_fraction=0, input_smoothing=0
    )
    dm.setup()
    src = dm.train_sources[0]
    assert src.low[0] == pytest.approx(0) and src.high[0] == pytest.approx(1000)


def test_multichannel_and_time_axes(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    image = rng.random((3, 2, 32, 32)).astype(np.float32)  # t, c, y, x
    store = write_ome_zarr_collection(tmp_path / "tc.ome.zarr", [image, image], "tcyx")
    dm = ZarrDataModule(str(store), patch_size=16, batch_size=2, samples_per_epoch=2, channels=[1])
    dm.setup()
    assert dm.in_channels == 1
    assert next(iter(dm.train_dataloader())).shape == (2, 1, 16, 16)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((32, 32), np.nan, np.float32), "all NaN"),
        (np.zeros((0, 32), np.float32), "empty"),
        (np.where(np.eye(32) > 0, np.nan, 1.0).astype(np.float32) + np.arange(32), "NaN/Inf values"),
        (np.ones((32, 32), np.float32), "no dynamic range"),
        (np.random.default_rng(0).random((8, 8)).astype(np.float32), "smaller than the patch"),
    ],
)
def test_bad_images_fail_with_the_image_name(write_zarr, array: np.ndarray, message: str) -> None:  # noqa: ANN001
    path = write_zarr(array, "bad.zarr")
    dm = ZarrDataModule(str(path), patch_size=16, val_fraction=0)
    with pytest.raises(ValueError, match=message) as info:
        dm.setup()
    assert "bad.zarr" in str(info.value)


def test_missing_path_and_bad_patch_size(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ZarrDataModule(str(tmp_path / "nope.zarr")).setup()
    with pytest.raises(ValueError, match="not divisible by the scale 4"):
        ZarrDataModule(str(tmp_path), patch_size=30, scale=4)


def test_multi_frame_windows_become_channels(tmp_path) -> None:  # noqa: ANN001
    # Frame t holds the value t everywhere (plus a ramp so percentiles differ): windows are consecutive.
    t = np.arange(9, dtype=np.float32)[:, None, None, None]
    stack = t * 10 + np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(1, 1, 32, 32)
    store = write_ome_zarr_collection(tmp_path / "t.ome.zarr", [stack, stack], "tcyx")
    dm = ZarrDataModule(str(store), patch_size=16, batch_size=4, samples_per_epoch=8, val_samples=4, frames=5)
    dm.setup()
    assert dm.in_channels == 5
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 5, 16, 16)
    src = dm.train_sources[0]
    raw = batch.numpy() * (src.high[0] - src.low[0]) + src.low[0]
    frame_index = np.floor(raw.mean(axis=(2, 3)) / 10 + 0.01)
    assert np.all(np.diff(frame_index, axis=1) == 1)  # five neighbouring frames, in order


def test_multi_frame_errors(tmp_path) -> None:  # noqa: ANN001
    store = write_ome_zarr_collection(
        tmp_path / "s.ome.zarr", [np.random.default_rng(0).random((3, 1, 32, 32))], "tcyx"
    )
    with pytest.raises(ValueError, match="frames must be odd"):
        ZarrDataModule(str(store), patch_size=16, frames=4)
    with pytest.raises(ValueError, match="needs at least that many"):
        ZarrDataModule(str(store), patch_size=16, frames=5, val_fraction=0).setup()
    with pytest.raises(ValueError, match="needs a 'z' axis"):
        ZarrDataModule(str(store), patch_size=16, frames=3, frame_axis="z", val_fraction=0).setup()


# --- datasets at scale: area sampling, foreground, cached statistics, jitter, manifests ---------------
def _draw_sources(dataset, n: int, seed: int = 0) -> np.ndarray:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    return np.array([dataset._draw(rng)[0] for _ in range(n)])


def test_images_of_different_sizes_are_sampled_by_area(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    small, large = rng.random((1, 32, 32)), rng.random((1, 96, 96))  # areas 1 : 9
    store = write_ome_zarr_collection(tmp_path / "sizes.ome.zarr", [small, large], "cyx", names=["s", "l"])
    dm = ZarrDataModule(str(store), patch_size=16, val_fraction=0, samples_per_epoch=8)
    dm.setup()
    dataset = dm.train_dataloader().dataset
    assert [s.ref.image_path for s in dm.train_sources] == ["l", "s"]
    picks = _draw_sources(dataset, 500)
    assert np.mean(picks == 0) == pytest.approx(0.9, abs=0.05)  # 3.7 sigma


def _half_empty(size: int = 128) -> np.ndarray:
    image = np.zeros((1, size, size), np.float32)
    image[0, :, size // 2 :] = np.random.default_rng(1).uniform(0.5, 1.0, (size, size // 2))
    return image


def _foreground_shares(dm: ZarrDataModule, n: int) -> np.ndarray:
    torch.manual_seed(0)
    dataset = dm.train_dataloader().dataset
    return np.array([float((dataset[i] > 0.25).float().mean()) for i in range(n)])


def test_foreground_sampling_rejects_empty_patches(tmp_path) -> None:  # noqa: ANN001
    store = write_ome_zarr_collection(tmp_path / "half.ome.zarr", [_half_empty()], "cyx")
    common = {"patch_size": 32, "val_fraction": 0, "samples_per_epoch": 200, "augment": False}
    plain = ZarrDataModule(str(store), **common)
    plain.setup()
    shares = _foreground_shares(plain, 200)
    # A patch start is uniform over 97 columns; the right half holds signal: about half the patches are
    # mostly empty without foreground sampling.
    assert 0.35 < np.mean(shares < 0.5) < 0.65
    picky = ZarrDataModule(
        str(store), foreground_fraction=0.5, foreground_threshold=0.2, max_tries=10, **common
    )
    picky.setup()
    shares = _foreground_shares(picky, 200)
    assert np.mean(shares >= 0.5 - 1 / 32) > 0.97  # failing 10 tries in a row: 0.49**10 < 0.1 %
    assert shares.mean() > 0.7


def test_foreground_sampling_stops_after_max_tries(tmp_path) -> None:  # noqa: ANN001
    store = write_ome_zarr_collection(tmp_path / "half.ome.zarr", [_half_empty()], "cyx")
    dm = ZarrDataModule(str(store), patch_size=32, val_fraction=0, foreground_fraction=1.0, max_tries=4)
    dm.setup()
    dataset = dm.train_dataloader().dataset
    draws: list[float] = []
    original = dataset._draw

    def counting(rng):  # noqa: ANN001, ANN202
        k, raw = original(rng)
        draws.append(float((raw > 0).mean()))
        return k, raw

    dataset._draw = counting
    torch.manual_seed(3)
    for i in range(20):  # a fully foreground 32² patch is rare here (start >= 64): most draws use all 4 tries
        draws.clear()
        patch = dataset[i]
        assert 1 <= len(draws) <= 4
        if len(draws) == 4:  # never a wrong pick: the best of the candidates is kept
            assert float((patch > 0.25).float().mean()) == pytest.approx(max(draws), abs=2 / 32)


def test_statistics_are_stored_and_reused_without_reading_pixels(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import zarr

    import psr.data.statistics as stats

    store = write_ome_zarr_collection(tmp_path / "set.ome.zarr", _images(3), "cyx")
    first = ZarrDataModule(str(store), patch_size=16, val_fraction=0)
    first.setup()
    record = dict(zarr.open_group(str(store / "img_001"), mode="r").attrs)["psr"]["stats"]
    assert record["version"] == stats.STATS_VERSION and record["array"] == "s0"
    assert record["shape"] == [1, 64, 64] and record["dtype"] == "uint16" and record["subsample"] == 64 * 64
    assert 1.0 in record["percentiles"] and 99.8 in record["percentiles"]
    assert len(record["values"]) == 1 and len(record["values"][0]) == len(record["percentiles"])
    # The next run reads no pixel: with every chunk deleted the statistics still come back unchanged.
    for chunk in store.glob("img_*/s*/c/**/*"):
        if chunk.is_file():
            chunk.unlink()

    def no_pixels(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("statistics were recomputed")

    monkeypatch.setattr(stats, "percentile_table", no_pixels)
    second = ZarrDataModule(str(store), patch_size=16, val_fraction=0)
    second.setup()
    for a, b in zip(first.train_sources, second.train_sources, strict=True):
        np.testing.assert_array_equal(a.low, b.low)
        np.testing.assert_array_equal(a.high, b.high)


def test_statistics_are_recomputed_when_stale_and_kept_in_memory_when_read_only(
    tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    import zarr

    import psr.data.statistics as stats

    store = write_ome_zarr_collection(tmp_path / "set.ome.zarr", _images(2), "cyx")
    ZarrDataModule(str(store), patch_size=16, val_fraction=0).setup()
    group = zarr.open_group(str(store / "img_000"), mode="r+")
    psr = dict(group.attrs["psr"])
    psr["stats"] = {**psr["stats"], "shape": [1, 32, 32]}  # as if the array had been rewritten
    group.attrs["psr"] = psr
    calls: list[str] = []
    original = stats.percentile_table

    def counting(ref, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(ref.image_path)
        return original(ref, *args, **kwargs)

    monkeypatch.setattr(stats, "percentile_table", counting)
    ZarrDataModule(str(store), patch_size=16, val_fraction=0).setup()
    assert calls == ["img_000"]
    assert zarr.open_group(str(store / "img_000"), mode="r").attrs["psr"]["stats"]["shape"] == [1, 64, 64]
    # Percentiles missing from the stored grid are computed (and added) too.
    calls.clear()
    ZarrDataModule(str(store), patch_size=16, val_fraction=0, percentiles=(2.345, 99.8)).setup()
    assert calls == ["img_000", "img_001"]

    # A store that cannot be written: statistics are computed in memory and training goes on.
    fresh = write_ome_zarr_collection(tmp_path / "ro.ome.zarr", _images(2), "cyx")

    def read_only(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise PermissionError("read-only file system")

    monkeypatch.setattr(stats, "_open_for_update", read_only)
    dm = ZarrDataModule(str(fresh), patch_size=16, val_fraction=0)
    dm.setup()
    assert "psr" not in dict(zarr.open_group(str(fresh / "img_000"), mode="r").attrs)
    low, high = stats.image_statistics(dm.train_sources[0].ref, 0, (1, 2), (1.0, 99.8), dm.input_smoothing)
    np.testing.assert_array_equal(dm.train_sources[0].low, low)
    np.testing.assert_array_equal(dm.train_sources[0].high, high)


def test_percentile_jitter_draws_per_patch_and_validation_never_jitters(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    images = [rng.exponential(100.0, (1, 64, 64)).astype(np.float32) for _ in range(3)]
    store = write_ome_zarr_collection(tmp_path / "j.ome.zarr", images, "cyx")
    dm = ZarrDataModule(
        str(store),
        patch_size=16,
        val_fraction=0.34,
        augment=False,
        percentile_jitter=[[0.5, 3.0], [99.0, 99.9]],
        input_smoothing=0,  # the table holds the raw percentiles compared below
    )
    dm.setup()
    src = dm.train_sources[0]
    sample = np.asarray(src.ref.open()[...], np.float64).ravel()
    # The stored table interpolates any percentile closely, without reading pixels again.
    for q in (0.77, 2.345, 99.123, 99.87):
        assert src.table.at(q)[0] == pytest.approx(np.percentile(sample, q), rel=0.02)

    def recorded(dataset, n: int) -> list[tuple[float, float]]:  # noqa: ANN001
        seen: list[tuple[float, float]] = []
        original = dataset._normalise

        def spy(block, low, high):  # noqa: ANN001, ANN202
            seen.append((float(low[0]), float(high[0])))
            return original(block, low, high)

        dataset._normalise = spy
        for i in range(n):
            dataset[i]
        return seen

    torch.manual_seed(0)
    train = dm.train_dataloader().dataset
    train.sources, train.weights = [src], np.ones(1)
    pairs = recorded(train, 40)
    lows, highs = np.array(pairs).T
    assert src.table.at(0.5)[0] - 1e-6 <= lows.min() and lows.max() <= src.table.at(3.0)[0] + 1e-6
    assert src.table.at(99.0)[0] - 1e-6 <= highs.min() and highs.max() <= src.table.at(99.9)[0] + 1e-6
    assert np.unique(lows).size > 30 and np.unique(highs).size > 30
    val = recorded(dm.val_dataloader().dataset, 10)
    assert {(lo, hi) for lo, hi in val} <= {(float(s.low[0]), float(s.high[0])) for s in dm.val_sources}


def test_bad_sampling_settings_fail_clearly(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="percentile_jitter"):
        ZarrDataModule(str(tmp_path), percentile_jitter=[[0.5, 3.0], [2.0, 99.9]])
    with pytest.raises(ValueError, match="foreground_fraction"):
        ZarrDataModule(str(tmp_path), foreground_fraction=1.5)
    with pytest.raises(ValueError, match="max_tries"):
        ZarrDataModule(str(tmp_path), max_tries=0)


def _manifest(images: dict[str, tuple[str, str]], pairs: list[dict] | None = None) -> dict:
    return {
        "psr": {
            "manifest": {
                "version": 1,
                "images": {n: {"source": f"{n}.tif", "split": s, "role": r} for n, (s, r) in images.items()},
                "pairs": pairs or [],
            }
        }
    }


def test_manifest_splits_train_val_and_test(tmp_path) -> None:  # noqa: ANN001
    names = ["a", "b", "c", "d", "e"]
    manifest = _manifest(
        {
            "a": ("train", "clean"),
            "b": ("train", "high"),
            "c": ("val", "high"),
            "d": ("val", "low"),
            "e": ("test", "clean"),
        },
        [{"low": "d", "high": "c", "scale": 1, "split": "val"}],
    )
    store = write_ome_zarr_collection(
        tmp_path / "m.ome.zarr", _images(5), "cyx", names=names, attributes=manifest
    )
    dm = ZarrDataModule(str(store), patch_size=16, val_fraction=0.2)
    dm.setup()
    assert [s.ref.image_path for s in dm.train_sources] == ["a", "b"]
    assert [s.ref.image_path for s in dm.val_sources] == ["c"]
    assert dm.manifests[str(store)].pairs[0].low == "d"
    # val_fraction=0: no clean validation, and the val images still stay out of training.
    dm = ZarrDataModule(str(store), patch_size=16, val_fraction=0)
    dm.setup()
    assert [s.ref.image_path for s in dm.train_sources] == ["a", "b"] and not dm.val_sources


def test_manifest_without_val_images_falls_back_to_a_random_split(tmp_path) -> None:  # noqa: ANN001
    names = ["a", "b", "c", "d", "e"]
    manifest = _manifest({n: ("test" if n == "e" else "train", "clean") for n in names})
    store = write_ome_zarr_collection(
        tmp_path / "m.ome.zarr", _images(5), "cyx", names=names, attributes=manifest
    )
    dm = ZarrDataModule(str(store), patch_size=16, val_fraction=0.25)
    dm.setup()
    train = {s.ref.image_path for s in dm.train_sources}
    val = {s.ref.image_path for s in dm.val_sources}
    assert len(val) == 1 and len(train) == 3 and train | val == {"a", "b", "c", "d"}  # e is a test image


def test_malformed_manifest_is_one_clear_error(tmp_path) -> None:  # noqa: ANN001
    manifest = _manifest({"a": ("holdout", "clean")})
    store = write_ome_zarr_collection(
        tmp_path / "m.ome.zarr", _images(1), "cyx", names=["a"], attributes=manifest
    )
    with pytest.raises(
        ValueError, match=r"psr\.manifest\.images\.a\.split is 'holdout'; expected one of train"
    ):
        ZarrDataModule(str(store), patch_size=16).setup()


def test_image_files_are_ingested_once_into_the_cache(tmp_path: Path) -> None:
    """data.path may name TIFF files directly: they are converted to OME-Zarr once and reused."""
    import tifffile

    from psr.data.zarr import ZarrDataModule

    rng = np.random.default_rng(0)
    folder = tmp_path / "tiffs"
    folder.mkdir()
    images = [rng.integers(0, 4000, (80, 96), dtype=np.uint16) for _ in range(3)]
    for i, image in enumerate(images):
        tifffile.imwrite(folder / f"cell_{i}.tif", image)
    cache = tmp_path / "cache"
    kwargs = dict(patch_size=32, batch_size=2, samples_per_epoch=4, val_samples=2, cache_dir=str(cache))
    dm = ZarrDataModule(path=str(folder), val_fraction=0.0, **kwargs)
    dm.setup("fit")
    stores = sorted(cache.glob("ingest-*.ome.zarr"))
    assert len(stores) == 1 and dm.path == str(stores[0])
    assert sorted(int(np.prod(s.ref.shape)) for s in dm.train_sources) == [80 * 96] * 3
    values = {tuple(np.asarray(s.ref.open()[:]).ravel()[:5]) for s in dm.train_sources}
    assert values == {tuple(im.ravel()[:5]) for im in images}
    mtime = stores[0].stat().st_mtime_ns
    again = ZarrDataModule(path=str(folder), val_fraction=0.0, **kwargs)
    again.setup("fit")  # the next run: the same store, not rewritten
    assert again.path == dm.path and stores[0].stat().st_mtime_ns == mtime
    tifffile.imwrite(folder / "cell_3.tif", images[0])  # a new file: a new store with it
    grown = ZarrDataModule(path=str(folder), val_fraction=0.0, **kwargs)
    grown.setup("fit")
    assert grown.path != dm.path and len(grown.train_sources) == 4


def test_inline_manifest_sets_the_splits(tmp_path: Path) -> None:
    import tifffile

    from psr.data.zarr import ZarrDataModule

    rng = np.random.default_rng(1)
    for split, n in (("train", 2), ("val", 1)):
        (tmp_path / split).mkdir()
        for i in range(n):
            tifffile.imwrite(
                tmp_path / split / f"{split}{i}.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8)
            )
    manifest = {
        "images": [
            {"path": str(tmp_path / "train" / "*.tif"), "split": "train"},
            {"path": str(tmp_path / "val" / "*.tif"), "split": "val"},
        ]
    }
    dm = ZarrDataModule(
        path=None, manifest=manifest, patch_size=32, val_samples=2, cache_dir=str(tmp_path / "cache")
    )
    dm.setup("fit")
    assert sorted(s.ref.image_path for s in dm.train_sources) == ["train0", "train1"]
    assert [s.ref.image_path for s in dm.val_sources] == ["val0"]


def test_missing_image_glob_is_one_clear_error(tmp_path: Path) -> None:
    from psr.data.zarr import ZarrDataModule

    dm = ZarrDataModule(path=str(tmp_path / "nothing_*.tif"), patch_size=32, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="nothing_"):
        dm.setup("fit")


def test_path_and_manifest_name_the_images_once(compose_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    from psr.tasks.errors import ConfigError
    from psr.tasks.train import build

    with pytest.raises(ConfigError, match=r"data\.path is not set"):
        build(compose_cfg("data=zarr"))
    with pytest.raises(ConfigError, match=r"data\.path and data\.manifest are both set"):
        build(compose_cfg("data=zarr", f"data.path={tmp_path}", "+data.manifest.images=[a.tif]"))


def test_ingest_errors_name_the_config_keys(tmp_path: Path) -> None:
    import tifffile

    from psr.data.zarr import ZarrDataModule

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((64, 64), np.uint8) + np.arange(64, dtype=np.uint8))
    dm = ZarrDataModule(
        path=str(tmp_path / "a.tif"), ingest={"pixel_size": -1.0}, cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(ValueError, match=r"data\.ingest\.pixel_size") as err:
        dm.setup("fit")
    assert "--pixel-size" not in str(err.value)
