"""Feeding the accelerator: loader settings picked from the machine, CPU threads, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from psr.tasks import hardware as train_task
from tests.conftest import ROOT, TINY


def _cfg(trainer: dict[str, Any], data: dict[str, Any], **top: Any) -> Any:
    return OmegaConf.create({"trainer": trainer, "data": data, **top})


NULLS = {"num_workers": None, "pin_memory": None, "persistent_workers": None, "prefetch_factor": None}


@pytest.mark.parametrize(
    ("cpus", "devices", "workers"),
    [(16, 1, 8), (64, 1, 8), (2, 1, 1), (1, 1, 0), (16, 4, 3), (16, [0, 1], 7)],
)
def test_cuda_picks_workers_per_gpu_process(
    monkeypatch: pytest.MonkeyPatch, cpus: int, devices: Any, workers: int
) -> None:
    monkeypatch.setattr(train_task, "cpu_count", lambda: cpus)
    picks = train_task.loader_settings(_cfg({"accelerator": "gpu", "devices": devices}, dict(NULLS)))
    assert picks == {
        "num_workers": workers,
        "pin_memory": True,
        "persistent_workers": workers > 0,
        "prefetch_factor": 4 if workers else None,
    }


def test_auto_accelerator_with_a_gpu_counts_as_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_task, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    picks = train_task.loader_settings(_cfg({"accelerator": "auto", "devices": 1}, dict(NULLS)))
    assert picks["num_workers"] == 8 and picks["pin_memory"] is True


def test_settings_the_user_gave_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_task, "cpu_count", lambda: 16)
    data = {**NULLS, "num_workers": 0, "pin_memory": False}
    picks = train_task.loader_settings(_cfg({"accelerator": "gpu", "devices": 1}, data))
    assert picks == {"persistent_workers": False, "prefetch_factor": None}  # follow the user's 0 workers
    set_all = {"num_workers": 3, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 2}
    assert train_task.loader_settings(_cfg({"accelerator": "gpu"}, set_all)) == {}
    # A data config without these keys (a user's own datamodule) gets none of them.
    assert train_task.loader_settings(_cfg({"accelerator": "gpu"}, {"batch_size": 4})) == {}


def test_cpu_picks_one_worker_and_logs_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(train_task, "cpu_count", lambda: 2)
    with caplog.at_level("INFO", logger="psr.tasks.hardware"):
        picks = train_task.loader_settings(_cfg({"accelerator": "cpu", "devices": 1}, dict(NULLS)))
    assert picks == {
        "num_workers": 1,
        "pin_memory": False,
        "persistent_workers": True,
        "prefetch_factor": None,
    }
    assert sum("data loader: num_workers=1" in r.getMessage() for r in caplog.records) == 1


def test_trainer_configs_compose_with_the_loader_keys(compose_cfg) -> None:  # noqa: ANN001
    cfg = compose_cfg("trainer=cpu", tiny=False)
    assert cfg.trainer.accelerator == "cpu" and "trainer_threads" in cfg and cfg.trainer_threads is None
    assert cfg.data.num_workers == 1 and cfg.data.prefetch_factor is None
    assert "trainer_threads" not in cfg.trainer  # Lightning's Trainer would reject it
    gpu = compose_cfg("trainer=gpu", tiny=False)
    assert gpu.data.num_workers is None and "trainer_threads" not in gpu
    user = compose_cfg("trainer=cpu", "data.num_workers=3", "trainer_threads=1", tiny=False)
    assert user.data.num_workers == 3 and user.trainer_threads == 1


def test_trainer_cpu_sets_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(train_task, "physical_cores", lambda: 6)
        cfg = _cfg({"accelerator": "cpu", "devices": 1}, {}, trainer_threads=None)
        assert train_task.set_threads(cfg) == 6 and torch.get_num_threads() == 6
        ddp = _cfg({"accelerator": "cpu", "devices": 2}, {}, trainer_threads=None)
        assert train_task.set_threads(ddp) == 3
        assert train_task.set_threads(_cfg({"accelerator": "cpu"}, {}, trainer_threads=1)) == 1
        assert torch.get_num_threads() == 1
        assert train_task.set_threads(_cfg({"accelerator": "gpu"}, {})) is None  # no key: torch's default
        with pytest.raises(train_task.ConfigError, match="trainer_threads"):
            train_task.set_threads(_cfg({"accelerator": "cpu"}, {}, trainer_threads=0))
    finally:
        torch.set_num_threads(before)


def test_physical_cores_is_within_the_cpus() -> None:
    assert 1 <= train_task.physical_cores() <= train_task.cpu_count()


def test_datamodule_passes_the_loader_settings(tmp_path: Path) -> None:
    from psr.data.demo import DemoDataModule

    kwargs: dict[str, Any] = {"n_images": 3, "image_size": 64, "patch_size": 32, "batch_size": 2}
    dm = DemoDataModule(
        str(tmp_path), **kwargs, num_workers=1, pin_memory=False, persistent_workers=True, prefetch_factor=3
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (1, True, 3)
    plain = DemoDataModule(str(tmp_path), **kwargs, num_workers=None, pin_memory=None)
    plain.setup("fit")
    loader = plain.train_dataloader()
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (0, False, False)
    assert loader.prefetch_factor is None


HEAVY = ("timm", "segmentation_models_pytorch", "torchvision", "dask", "xarray", "wandb")
# Not needed to start training a care_unet or rcan on the demo data (already generated) with
# logger=none: the OME-Zarr writer stack, other formats' readers, the packages of figures and sweeps.
NOT_AT_START = ("ome_zarr", "bioio", "tifffile", "skimage", "pandas", "optuna", "napari", "sklearn")


def _run(code: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["care_unet", "rcan"])
def test_training_care_unet_or_rcan_imports_no_timm(tmp_path: Path, model: str) -> None:
    from psr.data.demo import ensure_demo_store

    overrides = [*TINY, f"model={model}", "debug=fdr", f"paths.output_dir={tmp_path / 'run'}"]
    overrides += [f"paths.cache_dir={tmp_path / 'cache'}", "+callbacks.probe._target_=__main__.FirstStep"]
    # Every run after the first finds the phantoms generated (writing them needs the OME-Zarr writer).
    ensure_demo_store(tmp_path / "cache", n_images=3, image_size=64)
    code = f"""
import json, sys
import lightning  # lightning's torchmetrics imports torchvision when it is installed: not psr's doing
watched = {(*HEAVY, *NOT_AT_START)!r}
baseline = {{m: m in sys.modules for m in watched}}
at_first_step = {{}}

class FirstStep(lightning.Callback):
    def on_train_batch_end(self, *args):
        at_first_step.update({{m: m in sys.modules for m in watched}})

from hydra import compose, initialize_config_dir
with initialize_config_dir(config_dir={str(ROOT / "conf")!r}, version_base="1.3"):
    cfg = compose("train", overrides={overrides!r})
from psr.tasks.train import train
train(cfg)
after = {{m: m in sys.modules for m in watched}}
print(json.dumps({{"baseline": baseline, "first_step": at_first_step, "after": after}}))
"""
    result = _run(code)
    for name in ("timm", "segmentation_models_pytorch", "wandb", "dask", "xarray"):
        assert not result["after"][name], f"training model={model} imported {name}"
    assert result["after"]["torchvision"] == result["baseline"]["torchvision"], "psr imported torchvision"
    for name in NOT_AT_START:  # unless Lightning had already imported it
        assert result["first_step"][name] == result["baseline"][name], (
            f"model={model} imported {name} before its first training step"
        )


def test_predicting_to_tiff_imports_no_dask(tmp_path: Path) -> None:
    import tifffile
    from hydra.utils import instantiate

    config = OmegaConf.create(
        {
            "scale": 2,
            "data": {"percentiles": [1.0, 99.8]},
            "model": OmegaConf.load(ROOT / "conf/model/care_unet.yaml"),
        }
    )
    net = instantiate(config.model)
    ckpt = tmp_path / "m.ckpt"
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "psr_config": OmegaConf.to_container(config, resolve=True),
            "psr_generator": "net",
        },
        ckpt,
    )
    tifffile.imwrite(
        tmp_path / "in.tif", np.random.default_rng(0).integers(0, 1000, (48, 40), dtype=np.uint16)
    )
    code = f"""
import json, sys
import lightning
baseline = {{m: m in sys.modules for m in {HEAVY!r}}}
from psr.inference.predict import predict_file
predict_file({str(ckpt)!r}, {str(tmp_path / "in.tif")!r}, {str(tmp_path / "out.tif")!r}, device="cpu", tile=32, overlap=8)
print(json.dumps({{"baseline": baseline, "after": {{m: m in sys.modules for m in {HEAVY!r}}}}}))
"""
    result = _run(code)
    assert (tmp_path / "out.tif").is_file()
    for name in ("dask", "xarray", "timm", "segmentation_models_pytorch"):
        assert not result["after"][name], f"predicting to TIFF imported {name}"
