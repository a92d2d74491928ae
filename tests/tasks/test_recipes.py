"""The real-data recipes (experiment=w2s_denoise, experiment=em_sr) train end to end on ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, SHARED_DATA

pytestmark = pytest.mark.realdata

SMALL = [
    "data.patch_size=32",
    "data.batch_size=2",
    "data.samples_per_epoch=4",
    "data.val_samples=4",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.num_sanity_val_steps=0",
]


@pytest.fixture(autouse=True)
def _needs_shared_data(monkeypatch: pytest.MonkeyPatch) -> None:
    if not SHARED_DATA.exists():
        pytest.skip("the real images in ../shared/data are absent")
    # The recipes name ../shared/data relative to the project root, where the entry points run.
    monkeypatch.chdir(ROOT)


def test_w2s_denoise_trains_on_clean_images_and_validates_on_real_pairs(compose_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    from psr.tasks.train import build, train

    cfg = compose_cfg("experiment=w2s_denoise", *SMALL)
    parts = build(cfg)
    dm = parts["datamodule"]
    names = {s.ref.image_path for s in dm.train_sources}
    # 80 fields of view × 3 channels, without 010 and the development fields of view 071–080
    assert len(names) == 207
    assert not any(name[:3] == "010" or 71 <= int(name[:3]) <= 80 for name in names)
    batch = next(iter(dm.val_dataloader()))
    # validation: crops of the development pairs
    assert len(dm.val_crops) == 4 and all(71 <= int(n[:3]) <= 80 for n in dm.val_crops.names)
    assert set(batch) == {"input", "target", "real"}  # real pairs: the crappifier is bypassed
    summary = train(cfg)
    assert np.isfinite(summary["best"]["val/psnr"]) and np.isfinite(summary["best"]["val/baseline_psnr"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["crappifier"] == "calibrated_w2s"


def test_the_gpu_recipe_is_the_cpu_recipe_with_a_gpu_budget(compose_cfg) -> None:  # noqa: ANN001
    cpu = compose_cfg("experiment=w2s_denoise", tiny=False)
    gpu = compose_cfg("experiment=w2s_denoise_gpu", tiny=False)
    assert gpu.trainer.accelerator == "gpu" and gpu.trainer.precision == "bf16-mixed"
    assert gpu.data.path == cpu.data.path and gpu.data.val_pairs == cpu.data.val_pairs
    assert gpu.model.depth == cpu.model.depth and gpu.crappifier == cpu.crappifier
    assert gpu.data.patch_size == 128 and gpu.data.batch_size == 32


def test_em_sr_splits_train_and_test_slices(compose_cfg) -> None:  # noqa: ANN001
    from psr.tasks.train import build, train

    cfg = compose_cfg("experiment=em_sr", *SMALL)
    dm = build(cfg)["datamodule"]
    assert len(dm.train_sources) == 30 and len(dm.val_sources) == 30
    assert dm.train_sources[0].ref.pixel_size["x"] == pytest.approx(4.0)
    summary = train(cfg)
    assert summary["scale"] == 4 and np.isfinite(summary["best"]["val/psnr"])
