"""``data=pairs``: training on clean images, validation on real low/high pairs (dict batches)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hydra.utils import instantiate

from psr.data.normalise import normalise_frame
from psr.data.paired import PairedDataModule
from psr.data.pairs import PairError
from psr.io.omezarr import write_ome_zarr_collection
from psr.metrics import psnr


def _norm(image: np.ndarray) -> np.ndarray:
    """Percentile normalisation by hand (1 / 99.8), the way the pairs are expected to be scaled."""
    lo, hi = np.percentile(image.astype(np.float64), [1.0, 99.8])
    return ((image.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


@pytest.fixture
def clean_store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_ome_zarr_collection(
        tmp_path / "clean.ome.zarr", [rng.random((1, 64, 64)) for _ in range(2)], "cyx"
    )


def _write_pairs(folder: Path, n: int, low_size: int, scale: int, seed: int = 0) -> tuple[Path, Path]:
    """``n`` pairs: a noisy low image (``low_size``²) and a high image ``scale`` times larger, scaled
    differently (as published pairs are), the high one a nearest-neighbour enlargement of the clean."""
    rng = np.random.default_rng(seed)
    low_dir, high_dir = folder / "low", folder / "high"
    low_dir.mkdir(parents=True)
    high_dir.mkdir(parents=True)
    for i in range(n):
        clean = rng.random((low_size, low_size)) * 200 + 20
        noisy = clean + rng.normal(0, 15, clean.shape)
        tifffile.imwrite(low_dir / f"f{i}.tif", noisy.astype(np.float32))
        tifffile.imwrite(
            high_dir / f"f{i}.tif", (np.kron(clean, np.ones((scale, scale))) * 3 + 7).astype(np.uint16)
        )
    return low_dir, high_dir


def _normalised(folder: Path, n: int) -> torch.Tensor:
    """The ``f{i}.tif`` images of ``folder`` as ``(n, 1, Y, X)``, each normalised on its own."""
    return torch.from_numpy(np.stack([_norm(tifffile.imread(folder / f"f{i}.tif")) for i in range(n)]))[
        :, None
    ]


def test_val_batches_are_the_pairs_cut_into_aligned_crops(tmp_path: Path, clean_store: Path) -> None:
    low_dir, high_dir = _write_pairs(tmp_path, 2, 40, 2)
    dm = PairedDataModule(
        str(clean_store),
        val_pairs={"low": str(low_dir), "high": str(high_dir)},
        patch_size=32,
        scale=2,
        batch_size=16,
        input_smoothing=0.0,  # raw percentiles, as _norm takes them
    )
    dm.setup("fit")
    assert len(dm.train_sources) == 2 and not dm.val_sources  # every clean image trains
    (batch,) = list(dm.val_dataloader())
    # 40² low → 16² crops at 0 and 16 along Y and X: 4 per pair, 8 in all.
    assert batch["input"].shape == (8, 1, 16, 16) and batch["target"].shape == (8, 1, 32, 32)
    expected_low, expected_high = [], []
    for i in range(2):
        low = _norm(tifffile.imread(low_dir / f"f{i}.tif"))
        high = _norm(tifffile.imread(high_dir / f"f{i}.tif"))
        for y in (0, 16):
            for x in (0, 16):
                expected_low.append(low[y : y + 16, x : x + 16])
                expected_high.append(high[2 * y : 2 * y + 32, 2 * x : 2 * x + 32])
    np.testing.assert_allclose(batch["input"][:, 0].numpy(), np.stack(expected_low), atol=1e-5)
    np.testing.assert_allclose(batch["target"][:, 0].numpy(), np.stack(expected_high), atol=1e-5)
    assert torch.equal(
        torch.cat(list(dm.val_dataloader()))["input"] if False else batch["input"], batch["input"]
    )
    # Every epoch the same crops.
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(again["input"], batch["input"]) and torch.equal(again["target"], batch["target"])


def test_val_samples_caps_the_crops_spread_over_pairs(tmp_path: Path, clean_store: Path) -> None:
    low_dir, high_dir = _write_pairs(tmp_path, 3, 64, 1)
    dm = PairedDataModule(
        str(clean_store),
        val_pairs={"low": str(low_dir), "high": str(high_dir)},
        patch_size=16,
        val_samples=10,
    )
    dm.setup()
    assert dm.val_crops is not None and len(dm.val_crops) == 10  # of 3 × 16 possible crops
    assert len({name.split("#")[0] for name in dm.val_crops.names}) == 3


def test_pair_shapes_inconsistent_with_the_scale_name_both_files(tmp_path: Path, clean_store: Path) -> None:
    low_dir, high_dir = _write_pairs(tmp_path, 1, 40, 1)
    dm = PairedDataModule(
        str(clean_store), val_pairs={"low": str(low_dir), "high": str(high_dir)}, patch_size=16, scale=2
    )
    with pytest.raises(
        PairError, match=r"low .*low/f0\.tif has 1 plane\(s\) of \[40, 40\] and high .*high/f0\.tif"
    ):
        dm.setup()
    with pytest.raises(ValueError, match="sets only one of low and high"):
        PairedDataModule(str(clean_store), val_pairs={"low": str(low_dir)})
    with pytest.raises(
        ValueError, match=r"data\.val_pairs: set data\.val_pairs\.low and data\.val_pairs\.high"
    ):
        PairedDataModule(str(clean_store), patch_size=16).setup()


def test_manifest_pairs_validate_and_low_images_never_train(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    clean = [rng.random((1, 32, 32)).astype(np.float32) for _ in range(2)]
    high = rng.random((1, 32, 32)).astype(np.float32) * 100
    low = high + rng.normal(0, 5, high.shape).astype(np.float32)
    images = {"a": ("train", "clean"), "b": ("train", "clean"), "hi": ("val", "high"), "lo": ("val", "low")}
    manifest = {
        "psr": {
            "manifest": {
                "version": 1,
                "images": {n: {"source": f"{n}.tif", "split": s, "role": r} for n, (s, r) in images.items()},
                "pairs": [{"low": "lo", "high": "hi", "scale": 1, "split": "val"}],
            }
        }
    }
    store = write_ome_zarr_collection(
        tmp_path / "m.ome.zarr", [*clean, high, low], "cyx", names=list(images), attributes=manifest
    )
    dm = PairedDataModule(str(store), patch_size=16, input_smoothing=1.0)
    dm.setup()
    assert [s.ref.image_path for s in dm.train_sources] == ["a", "b"]
    (batch,) = list(dm.val_dataloader())
    assert batch["input"].shape == (4, 1, 16, 16)
    # The raw low frame is normalised as prediction normalises it (percentiles of a copy smoothed by
    # data.input_smoothing, here 1 px); the high image by its own raw percentiles.
    expected_low = normalise_frame(low, (1.0, 99.8), 1.0)[0]
    assert not np.allclose(expected_low, _norm(low[0]), atol=1e-3)  # the smoothing matters here
    np.testing.assert_allclose(batch["input"][0, 0].numpy(), expected_low[:16, :16], atol=1e-5)
    np.testing.assert_allclose(batch["target"][3, 0].numpy(), _norm(high[0])[16:, 16:], atol=1e-5)
    with pytest.raises(ValueError, match=r"lists val pairs at scale 2 \(it has val pairs at scale \[1\]\)"):
        PairedDataModule(str(store), patch_size=16, scale=2).setup()


def test_fit_validates_on_the_real_pairs(compose_cfg, tmp_path: Path, clean_store: Path) -> None:  # noqa: ANN001
    from psr.tasks.train import train

    low_dir, high_dir = _write_pairs(tmp_path, 3, 32, 1, seed=5)
    cfg = compose_cfg(
        "data=pairs",
        f"data.path={clean_store}",
        f"data.val_pairs.low={low_dir}",
        f"data.val_pairs.high={high_dir}",
        "data.patch_size=32",
        "data.val_samples=8",
        "data.num_workers=0",
        "data.input_smoothing=0",  # raw percentiles, as _normalised takes them
        "scale=1",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
    )
    summary = train(cfg)
    best = summary["best"]
    # By hand: each 32² pair is one crop, each image normalised on its own.
    lows = _normalised(low_dir, 3)
    highs = _normalised(high_dir, 3)

    # Real pairs are scored after each image's least-squares affine fit to its target (CARE convention).
    def fitted(x: torch.Tensor) -> torch.Tensor:
        out = []
        for xi, ti in zip(x.double().numpy(), highs.double().numpy(), strict=True):
            a, b = np.polyfit(xi.ravel(), ti.ravel(), 1)
            out.append(a * xi + b)
        return torch.from_numpy(np.stack(out)).float()

    # The baseline is the real low image itself (scale 1): not a crappified clean patch.
    assert best["val/baseline_psnr"] == pytest.approx(float(psnr(fitted(lows), highs).mean()), abs=1e-3)
    assert best["val/baseline_psnr"] > float(psnr(lows, highs).mean())  # the fit can only help
    net = instantiate(cfg.model)
    state = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    with torch.no_grad():
        pred = net.eval()(lows)
    assert best["val/psnr"] == pytest.approx(float(psnr(fitted(pred), highs).mean()), abs=1e-3)
    assert "test" not in summary  # no test pairs configured: no test pass
    assert summary["baseline"] == "identity"  # scale 1: the baseline is the real low image itself


def test_test_pairs_score_the_best_checkpoint_after_training(
    compose_cfg, tmp_path: Path, clean_store: Path
) -> None:  # noqa: ANN001
    from psr.tasks.train import train

    low_dir, high_dir = _write_pairs(tmp_path / "val", 2, 32, 1, seed=5)
    test_low, test_high = _write_pairs(tmp_path / "test", 2, 32, 1, seed=9)
    pairs = [f"data.val_pairs.low={low_dir}", f"data.val_pairs.high={high_dir}"]
    cfg = compose_cfg(
        "data=pairs",
        f"data.path={clean_store}",
        *pairs,
        f"data.test_pairs.low={test_low}",
        f"data.test_pairs.high={test_high}",
        "data.patch_size=32",
        "data.num_workers=0",
        "data.input_smoothing=0",
        "scale=1",
        "trainer.max_epochs=1",
    )
    summary = train(cfg)
    test = summary["test"]
    # Scored like validation, on the test pairs, by the best checkpoint: recomputed by hand.
    lows = _normalised(test_low, 2)
    highs = _normalised(test_high, 2)
    net = instantiate(cfg.model)
    state = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    with torch.no_grad():
        pred = net.eval()(lows)
    from psr.metrics.care import fit_affine

    assert test["test/psnr"] == pytest.approx(
        float(psnr(fit_affine(pred, highs).float(), highs).mean()), abs=1e-3
    )
    assert test["test/baseline_psnr"] == pytest.approx(
        float(psnr(fit_affine(lows, highs).float(), highs).mean()), abs=1e-3
    )
    assert test["test/psnr"] != pytest.approx(summary["best"]["val/psnr"], abs=1e-6)  # other images


@pytest.mark.realdata
def test_real_hagen_pairs_validate(clean_store: Path) -> None:
    """The real Hagen low/high-SNR nuclei pair (512², colour lookup table PNG: max over RGB)."""
    from tests.conftest import SHARED_DATA

    hagen = SHARED_DATA / "pairs" / "hagen_gigadb_lowhigh_snr"
    low = hagen / "low_snr_images" / "nucleus-lowsnr-sample.png"
    high = hagen / "high_snr_images" / "nucleus-highsnr-sample.png"
    if not (low.is_file() and high.is_file()):
        pytest.skip(f"the real Hagen pairs are not in {hagen}")
    pairs = {"low": str(low), "high": str(high), "channel": "max"}
    dm = PairedDataModule(str(clean_store), val_pairs=pairs, patch_size=64, val_samples=16, batch_size=16)
    dm.setup()
    (batch,) = list(dm.val_dataloader())
    assert batch["input"].shape == batch["target"].shape == (16, 1, 64, 64)
    # Aligned crops of one field of view: each input correlates with its own target far more than with
    # the target of another crop.
    x = batch["input"].flatten(1).double()
    y = batch["target"].flatten(1).double()
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    y = (y - y.mean(1, keepdim=True)) / y.std(1, keepdim=True)
    corr = x @ y.T / (x.shape[1] - 1)
    matched, others = corr.diagonal().mean(), corr[~torch.eye(16, dtype=torch.bool)].mean()
    assert matched > others + 0.25  # measured: 0.39 against -0.02 (background crops are mostly noise)


def test_foreground_fraction_keeps_validation_crops_with_signal(tmp_path: Path, clean_store: Path) -> None:
    low_dir, high_dir = _write_pairs(tmp_path, 1, 64, 1)
    for folder in (low_dir, high_dir):  # empty the left half of both images
        image = tifffile.imread(folder / "f0.tif")
        image[:, :32] = 0
        tifffile.imwrite(folder / "f0.tif", image)
    pairs = {"low": str(low_dir), "high": str(high_dir)}
    everything = PairedDataModule(str(clean_store), val_pairs=pairs, patch_size=16)
    everything.setup()
    assert everything.val_crops is not None and len(everything.val_crops) == 16
    picky = PairedDataModule(str(clean_store), val_pairs=pairs, patch_size=16, foreground_fraction=0.5)
    picky.setup()
    assert picky.val_crops is not None and len(picky.val_crops) == 8
    assert all(int(name.rsplit(",", 1)[1]) >= 32 for name in picky.val_crops.names)  # x start


def test_pair_files_are_read_through_the_reader_table(tmp_path: Path) -> None:
    """Pairs read every format ingest and prediction read (JPEG too), with the file's pixel size (in µm)."""
    from PIL import Image

    from psr.data.pairs import list_images, read_planes

    plane = np.random.default_rng(3).integers(0, 255, (24, 32), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "a.tif", plane, imagej=True, resolution=(1 / 80.0, 1 / 80.0), metadata={"unit": "nm"}
    )
    Image.fromarray(plane).save(tmp_path / "b.jpg", quality=100)
    Image.fromarray(np.dstack([plane] * 3)).save(tmp_path / "c.png")
    (tmp_path / "notes.txt").write_text("not an image")
    files = list_images(str(tmp_path))
    assert [f.path.name for f in files] == ["a.tif", "b.jpg", "c.png"]
    assert files[0].pixel_size == pytest.approx(0.08) and files[2].pixel_size is None
    assert [f.header() for f in files] == [((24, 32), "yx"), ((24, 32), "yx"), ((24, 32, 3), "yxc")]
    planes, labels = read_planes(files[2], "max", 2, 1)
    assert planes.shape == (1, 1, 24, 32) and labels == [""]
    np.testing.assert_array_equal(planes[0, 0], plane)
    with pytest.raises(PairError, match=r"notes.txt is a .txt file; expected one of .tif"):
        list_images(str(tmp_path / "notes.txt"))
