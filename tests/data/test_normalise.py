"""Train/test consistency of the input normalisation (``psr.data.normalise``).

Training normalises a clean image by its own percentiles and degrades it; prediction, evaluation and
real-pair validation normalise a raw frame by the percentiles of a smoothed copy. These tests check that
the two agree for the same field of view, and that every inference path uses the one function.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from psr.crappifiers import Chain
from psr.crappifiers.noise import GaussianNoise, PoissonNoise
from psr.data.normalise import NormalisationError, apply_range, frame_range, normalise_frame
from psr.data.phantoms import render_phantom


def _clean_and_raw(seed: int, photons: float = 8.0, read: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """A clean phantom normalised as training normalises it (the 1 / 99.8 percentiles of a copy smoothed
    by σ 1 px), and a raw frame of it: W2S-like shot and read noise, then an unknown camera gain and
    offset."""
    clean = render_phantom(seed).astype(np.float64)
    if clean.ndim == 2:
        clean = clean[None]
    clean = clean[:1]
    lo, hi = frame_range(clean, (1.0, 99.8), 1.0)
    norm = apply_range(clean, lo, hi)
    chain = Chain([PoissonNoise(photons=photons), GaussianNoise(sigma=read)])
    noisy = chain(torch.from_numpy(norm)[None], torch.Generator().manual_seed(seed))[0].numpy()
    return norm, 300.0 * noisy.astype(np.float64) + 100.0  # camera gain and offset: any affine map


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_raw_frame_is_normalised_like_its_clean_image_in_training(seed: int) -> None:
    norm, raw = _clean_and_raw(seed)
    # The raw frame's own percentiles, as training would map its clean twin: (raw - 100) / 300.
    lo, hi = frame_range(raw, (1.0, 99.8), 1.0)
    lo_u, hi_u = (lo[0] - 100.0) / 300.0, (hi[0] - 100.0) / 300.0
    assert abs(lo_u) < 0.03 and abs(hi_u - 1.0) < 0.06  # where training put 0 and 1
    # Without the smoothing the noise inflates the range well beyond what training used.
    raw_lo, raw_hi = frame_range(raw, (1.0, 99.8), 0.0)
    assert (raw_hi[0] - raw_lo[0]) / 300.0 > 1.15
    # So the network's input matches what it trained on: the noisy frame in training units.
    # So the network's input matches what it trained on (the noisy frame in training units) to within a
    # few hundredths of the training range, several times closer than raw percentiles would bring it.
    trained = (raw - 100.0) / 300.0
    error = np.abs(normalise_frame(raw, (1.0, 99.8), 1.0) - trained).mean()
    raw_error = np.abs(normalise_frame(raw, (1.0, 99.8), 0.0) - trained).mean()
    assert error < 0.03 and error < raw_error / 2


def test_training_statistics_are_the_smoothed_percentiles(tmp_path: Path) -> None:
    from psr.data.zarr import ZarrDataModule
    from psr.io.omezarr import write_ome_zarr_collection

    clean = render_phantom(4).astype(np.float32)[None]
    store = write_ome_zarr_collection(tmp_path / "c.ome.zarr", [clean, clean[:, ::-1].copy()], "cyx")
    for smoothing in (0.0, 1.0, 2.0):
        dm = ZarrDataModule(str(store), patch_size=32, val_fraction=0.0, input_smoothing=smoothing)
        dm.setup("fit")
        src = dm.train_sources[0]  # both images hold the same values
        lo, hi = frame_range(clean, (1.0, 99.8), smoothing)
        np.testing.assert_allclose(src.low, lo, rtol=1e-5)
        np.testing.assert_allclose(src.high, hi, rtol=1e-5)


def test_every_inference_path_normalises_a_raw_frame_the_same_way(tmp_path: Path) -> None:
    from psr.data.paired import normalise_image
    from psr.inference.images import input_statistics, open_input, plan_model_axes
    from psr.tasks.eval_data import normalise_plane as _normalise

    _, raw = _clean_and_raw(3)
    frame = raw.astype(np.float32)
    tifffile.imwrite(tmp_path / "raw.tif", frame[0])
    expected = normalise_frame(frame, (1.0, 99.8), 1.0)
    # evaluation
    np.testing.assert_allclose(_normalise(frame, (1.0, 99.8), "raw", 1.0), expected, atol=1e-6)
    # real-pair validation (N planes, C channels)
    np.testing.assert_allclose(normalise_image(frame[None], (1.0, 99.8), "raw", 1.0)[0], expected, atol=1e-6)
    # prediction
    with open_input(tmp_path / "raw.tif") as image:
        layout = plan_model_axes(image, 2, 1, None)
        low, high = input_statistics(image, layout, (1.0, 99.8), 1.0)
    np.testing.assert_allclose(apply_range(frame, low, high), expected, atol=1e-5)


def test_bad_frames_get_one_clear_error() -> None:
    with pytest.raises(NormalisationError, match=r"frame x holds 1 NaN/Inf values"):
        frame_range(np.array([[[0.0, np.nan], [1.0, 2.0]]]), (1.0, 99.8), 1.0, "frame x")
    with pytest.raises(NormalisationError, match=r"flat channel c1 has no dynamic range"):
        frame_range(np.zeros((1, 8, 8)), (1.0, 99.8), 1.0, "flat", ["c1"])


def test_the_batched_and_the_frame_normalisations_agree() -> None:
    """``normalise_percentile`` (tensors, per sample and channel) is ``normalise_frame`` on each sample."""
    from psr.data.normalise import normalise_percentile

    rng = np.random.default_rng(0)
    batch = rng.gamma(2.0, 30.0, size=(3, 2, 17, 23))
    ours = normalise_percentile(torch.from_numpy(batch), 1.0, 99.8).numpy()
    for b in range(3):
        np.testing.assert_allclose(ours[b], normalise_frame(batch[b], (1.0, 99.8)), rtol=1e-5, atol=1e-6)


def test_training_patches_use_float32_arithmetic_of_apply_range() -> None:
    block = np.random.default_rng(1).uniform(0, 4000, size=(2, 8, 8)).astype(np.float32)
    low, high = np.array([10.0, 20.0]), np.array([3000.0, 3500.0])
    patch = apply_range(block, low, high, dtype=np.float32)
    lo32, hi32 = low.astype(np.float32)[:, None, None], high.astype(np.float32)[:, None, None]
    np.testing.assert_array_equal(patch, (block - lo32) / (hi32 - lo32))  # bit for bit, as before the split
    assert patch.dtype == np.float32
    np.testing.assert_allclose(apply_range(block, low, high), patch, rtol=1e-6)


def test_the_american_spellings_still_work_with_a_deprecation_warning() -> None:
    import psr.metrics
    import psr.metrics.care as care

    with pytest.warns(DeprecationWarning, match="normalise_percentile"):
        assert care.normalize_percentile is care.normalise_percentile
    with pytest.warns(DeprecationWarning, match="care_normalise"):
        assert psr.metrics.care_normalize is care.care_normalise
    with pytest.raises(AttributeError, match="psr.metrics.care"):
        _ = care.normalise_nothing
    with pytest.raises(AttributeError, match="'psr.metrics' has no attribute 'normalise_nothing'"):
        _ = psr.metrics.normalise_nothing
