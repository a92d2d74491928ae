"""One source of truth in ``conf/``: groups that extend another inherit it instead of repeating its keys,
and the monitored metric is named once (``psr.metrics.keys``, ``${module.monitor}``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from psr.metrics import keys
from tests.conftest import CONF


def _own_keys(path: str) -> set[str]:
    return set(yaml.safe_load((CONF / path).read_text())) - {"defaults"}


@pytest.mark.parametrize(
    ("child", "base", "may_repeat"),
    [
        ("data/demo.yaml", "data/zarr.yaml", {"_target_", "patch_size", "samples_per_epoch", "val_samples"}),
        ("module/gan.yaml", "module/restoration.yaml", {"_target_", "optimizer", "scheduler"}),
    ],
)
def test_a_derived_group_inherits_its_base_and_repeats_only_what_it_changes(
    child: str, base: str, may_repeat: set[str], compose_cfg: Callable[..., object]
) -> None:
    doc = yaml.safe_load((CONF / child).read_text())
    assert doc["defaults"][0] == base.split("/")[1].removesuffix(".yaml")
    assert _own_keys(child) & _own_keys(base) <= may_repeat
    group, name = child.removesuffix(".yaml").split("/")
    extra = ["discriminator=patchgan"] if group == "module" else []
    cfg = compose_cfg(f"{group}={name}", *extra)
    assert set(cfg[group]) >= _own_keys(base)  # every base key reaches the composed config


def test_the_gan_keeps_adam_without_weight_decay(compose_cfg: Callable[..., object]) -> None:
    cfg = compose_cfg("module=gan", "discriminator=patchgan")
    opt = cfg.module.optimizer
    assert opt._target_ == "torch.optim.Adam" and opt.lr == 1e-4 and list(opt.betas) == [0.9, 0.99]
    assert opt.weight_decay == 0.0 and cfg.module.scheduler is None
    assert cfg.module.monitor == keys.VAL_PSNR


def test_demo_data_refuses_a_path() -> None:
    from psr.data.demo import DemoDataModule

    with pytest.raises(ValueError, match="data.path is set but data=demo"):
        DemoDataModule("/nonexistent-cache", path="images.ome.zarr")


@pytest.mark.parametrize("monitor", [keys.VAL_PSNR, keys.VAL_SSIM])
def test_the_optimized_metric_follows_the_monitor(monitor: str, compose_cfg: Callable[..., object]) -> None:
    cfg = compose_cfg(f"module.monitor={monitor}")
    assert cfg.optimized_metric == monitor
    assert cfg.callbacks.model_checkpoint.monitor == monitor


def test_the_metric_keys_are_the_logged_names() -> None:
    from psr.metrics.restoration_metric import RestorationScores
    from psr.modules.restoration import RestorationModule

    assert keys.VAL_PSNR == "val/psnr" and keys.VAL_BASELINE_SSIM == "val/baseline_ssim"
    assert keys.metric_key(keys.TEST, keys.GAIN_DB) == "test/gain_db"
    # what validation accumulates (RestorationScores' states) is the key module's SCORES
    assert set(RestorationScores().scores) | {keys.LOSS} == set(keys.SCORES)
    import inspect

    default = inspect.signature(RestorationModule).parameters["monitor"].default
    assert (
        default
        == keys.DEFAULT_MONITOR
        == yaml.safe_load((CONF / "module/restoration.yaml").read_text())["monitor"]
    )
