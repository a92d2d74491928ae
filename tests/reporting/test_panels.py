"""Validation panels: labelled columns, per-row scores, the stated contrast range, the scale bar."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from skimage.io import imread

from psr.metrics import psnr
from psr.metrics.care import fit_affine
from psr.reporting import panels
from psr.reporting.panels import PanelRow, panel_figure, scale_bar_length, source_pixel_size, validation_panel


def _row(seed: int, shape: tuple[int, int] = (24, 32)) -> PanelRow:
    rng = np.random.default_rng(seed)
    target = rng.random(shape).astype(np.float32)
    noisy = target + 0.1 * rng.standard_normal(shape).astype(np.float32)
    return PanelRow(noisy, target * 0.9, target, noisy, 27.125, 0.8125, 19.5, 0.5)


def _texts(fig) -> list[str]:  # noqa: ANN001
    found = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        found += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        found += [t.get_text() for a in ax.artists for t in a.findobj(Text)]
    return [t for t in found if t]


def test_columns_scores_and_contrast_range_are_written_on_the_panel() -> None:
    rows = [_row(0), _row(1)]
    fig = panel_figure(rows, baseline_name="bicubic", title="validation · epoch 3")
    texts = _texts(fig)
    for column in ("input (nearest)", "prediction", "target", "baseline (bicubic)"):
        assert texts.count(column) == 1  # titled once, on the first row
    assert texts.count("PSNR 27.12 dB · SSIM 0.812") == 2 and texts.count("PSNR 19.50 dB · SSIM 0.500") == 2
    assert any("share one range" in t for t in texts) and "validation · epoch 3" in texts
    lo, hi = np.percentile(rows[1].target, [0.5, 99.5])
    assert f"#2\ngrey range\n[{lo:.3g}, {hi:.3g}]" in texts
    # every tile of a row is drawn with the target's range
    images = [ax.images[0] for ax in fig.axes[4:8]]
    assert all(im.get_clim() == pytest.approx((lo, hi)) for im in images)
    assert not any(t.endswith("µm") for t in texts)  # no pixel size: no scale bar


def test_a_known_pixel_size_gets_a_scale_bar_on_each_target() -> None:
    fig = panel_figure([_row(0, (40, 64)), _row(1, (40, 64))], pixel_size=0.1, unit="micrometer")
    assert [t for t in _texts(fig) if t.endswith("µm")] == ["1 µm", "1 µm"]  # 64 px × 0.1 µm / 5 → 1 µm


def test_the_panel_is_a_readable_rgb_image() -> None:
    image = validation_panel([_row(i) for i in range(3)], pixel_size=4.0, unit="nanometer")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[1] >= 900 and image.shape[0] >= 3 * 150  # tiles of about 230 px, not thumbnails
    with pytest.raises(ValueError, match="at least one row"):
        validation_panel([])


@pytest.mark.parametrize(
    ("pixel_size", "width", "unit", "expected"),
    [
        (0.1, 64, "micrometer", (1, "µm", 10.0)),
        (0.01, 64, "micrometer", (100, "nm", 10.0)),
        (65.0, 256, "nanometer", (2, "µm", 2000 / 65)),
        (4.0, 512, "nm", (200, "nm", 50.0)),
        (1.0, 100, "pixel", (20, "pixel", 20.0)),
    ],
)
def test_scale_bars_are_round_and_fit_the_tile(
    pixel_size: float, width: int, unit: str, expected: tuple[float, str, float]
) -> None:
    length, shown, pixels = scale_bar_length(pixel_size, width, unit)
    assert (length, shown) == pytest.approx(expected[:2]) and pixels == pytest.approx(expected[2])
    assert width / 12 < pixels <= width / 5
    with pytest.raises(ValueError, match="expected positive numbers"):
        scale_bar_length(0.0, width, unit)


def test_the_pixel_size_and_unit_come_from_the_store(tmp_path: Path) -> None:
    from psr.io.omezarr import discover_images, write_ome_zarr_collection

    images = [np.zeros((32, 32), np.uint8), np.ones((32, 32), np.uint8)]
    write_ome_zarr_collection(
        tmp_path / "s.zarr", images, "yx", pixel_size={"y": 0.2, "x": 0.2}, unit="nanometer"
    )
    refs = discover_images(tmp_path / "s.zarr")
    assert source_pixel_size(SimpleNamespace(val_sources=[SimpleNamespace(ref=r) for r in refs])) == (
        0.2,
        "nm",
    )
    write_ome_zarr_collection(tmp_path / "bare.zarr", images[:1], "yx")  # no pixel size recorded
    bare = discover_images(tmp_path / "bare.zarr")
    assert source_pixel_size(SimpleNamespace(val_sources=[SimpleNamespace(ref=r) for r in bare])) is None
    assert source_pixel_size(None) is None


def _module(tmp_path: Path, scale: int = 2):  # noqa: ANN202
    from psr.crappifiers import Downsample
    from psr.modules.restoration import RestorationModule
    from tests.nets import TinyGenerator

    return RestorationModule(
        net=TinyGenerator(scale),
        crappifier=Downsample(factor=scale),
        loss=torch.nn.L1Loss(),
        optimizer=torch.optim.Adam,
        n_panels=2,
        panel_dir=str(tmp_path / "panels"),
    )


@pytest.mark.parametrize("real", [False, True])
def test_the_module_draws_its_scores_per_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real: bool
) -> None:
    module = _module(tmp_path)
    drawn: dict = {}
    original = panels.validation_panel

    def spy(rows, **options):  # noqa: ANN001, ANN003, ANN202
        drawn.update(rows=rows, **options)
        return original(rows, **options)

    monkeypatch.setattr(panels, "validation_panel", spy)
    logged: list[dict] = []
    image_logger = SimpleNamespace(log_image=lambda **kwargs: logged.append(kwargs))
    monkeypatch.setattr(type(module), "loggers", property(lambda self: [image_logger, SimpleNamespace()]))
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, 1, 16, 16, generator=gen)
    inp = torch.nn.functional.avg_pool2d(target, 2)
    with torch.no_grad():
        pred = module.net(inp) * (3.0 if real else 1.0)  # real pairs: the scale is fitted away
    module._log_panels(inp, pred, target, real=real)
    rows = drawn["rows"]
    assert len(rows) == 2 and drawn["baseline_name"] == "bilinear" and drawn["pixel_size"] is None
    scored = fit_affine(pred, target) if real else pred
    expected = psnr(scored.float(), target).tolist()
    assert [r.psnr for r in rows] == pytest.approx(expected[:2], abs=1e-4)
    assert ("real pairs" in drawn["note"]) is real
    png = imread(tmp_path / "panels" / "val_epoch000.png")
    assert png.shape[2] == 3 and png.shape[1] >= 900
    # the same picture goes to the loggers that take images (W&B), once
    assert len(logged) == 1 and logged[0]["key"] == "val/panels"
    assert np.array_equal(logged[0]["images"][0], png) and "baseline (bilinear)" in logged[0]["caption"][0]


def test_3d_multichannel_panels_show_the_middle_plane_of_channel_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psr.crappifiers import Downsample
    from psr.modules.restoration import RestorationModule
    from tests.nets import TinyGenerator

    module = RestorationModule(
        net=TinyGenerator(scale=2, channels=2, dims=3),
        crappifier=Downsample(factor=2),
        loss=torch.nn.L1Loss(),
        optimizer=torch.optim.Adam,
    )
    drawn: dict = {}
    monkeypatch.setattr(panels, "validation_panel", lambda rows, **o: drawn.update(rows=rows, **o))
    monkeypatch.setattr(
        type(module), "loggers", property(lambda self: [SimpleNamespace(log_image=lambda **kwargs: None)])
    )
    target = torch.rand(2, 2, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    inp = torch.nn.functional.avg_pool3d(target, (1, 2, 2))
    module._log_panels(inp, target.clone(), target)  # a perfect prediction
    assert drawn["note"] == "channel 1 of 2; the middle plane of 5"
    row = drawn["rows"][0]
    assert row.target.shape == row.input.shape == (16, 16)
    assert np.array_equal(row.target, target[0, 0, 2].numpy()) and row.psnr > 100
