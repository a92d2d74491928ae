"""Contract tests of the segmentation module: every 2D model config as a segmentation network, losses,
gradients, crappifiers on the input only, validation metrics, and checkpoints that describe themselves."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from psr.crappifiers import Chain, Downsample, GaussianNoise
from psr.modules.segmentation import SegmentationModule, output_channels, panel_row, soft_dice_loss
from psr.tasks.segment import configure_model
from tests.conftest import CONF, config_names
from tests.segmentation.conftest import discs

SEGMENTATION_MODELS = [
    name
    for name in config_names("model")
    if "out_channels" in OmegaConf.load(CONF / "model" / f"{name}.yaml")
    and getattr(get_class(OmegaConf.load(CONF / "model" / f"{name}.yaml")["_target_"]), "spatial_dims", 2)
    == 2
    or OmegaConf.load(CONF / "model" / f"{name}.yaml").get("dims") == 2
]


def _net(name: str, mode: str, classes: int) -> torch.nn.Module:
    cfg = OmegaConf.create(
        {
            "model": OmegaConf.load(CONF / "model" / f"{name}.yaml"),
            "module": {"mode": mode, "classes": classes},
        }
    )
    cfg.model.scale = 4  # what a restoration config holds; configure_model must undo it
    configure_model(cfg, in_channels=1)
    return instantiate(cfg.model)


@pytest.mark.parametrize("name", SEGMENTATION_MODELS)
@pytest.mark.parametrize(("mode", "classes"), [("semantic", 2), ("semantic", 4), ("instance", 3)])
def test_every_2d_model_becomes_a_segmentation_network(name: str, mode: str, classes: int) -> None:
    torch.manual_seed(0)
    net = _net(name, mode, classes)
    module = SegmentationModule(net, partial(torch.optim.Adam, lr=1e-3), classes=classes, mode=mode)
    image = torch.rand(2, 1, 20, 18)
    logits = net(image)
    assert logits.shape == (2, output_channels(mode, classes), 20, 18)  # same grid, any size
    label = torch.from_numpy(discs(20, 2, 0)[:, :18].astype("int64"))[None].repeat(2, 1, 1)
    if mode == "semantic":
        label = label.clamp(max=classes - 1)
    loss = module.loss(logits, module.targets(label))
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_model_without_out_channels_is_rejected() -> None:
    from psr.tasks.errors import ConfigError

    cfg = OmegaConf.create({"model": {"_target_": "torch.nn.Identity"}, "module": {"mode": "semantic"}})
    with pytest.raises(ConfigError, match="has no out_channels"):
        configure_model(cfg, 1)


def test_dice_loss_is_zero_for_a_perfect_prediction_and_one_for_the_opposite() -> None:
    target = torch.from_numpy(discs(32, 3, 1).astype("int64") > 0).long()[None]
    perfect = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float()
    assert soft_dice_loss(perfect, target, [1]) == pytest.approx(0.0, abs=1e-3)
    assert soft_dice_loss(1 - perfect, target, [1]) == pytest.approx(1.0, abs=1e-2)


def test_crappifier_degrades_the_input_only() -> None:
    crap = Chain([GaussianNoise(sigma=0.1), Downsample(2, "area")])
    net = _net("care_unet", "semantic", 2)
    module = SegmentationModule(net, partial(torch.optim.Adam), crappifier=crap)
    image = torch.rand(2, 1, 32, 32)
    label = (image[:, 0] > 0.5).long()
    out = module.on_after_batch_transfer({"image": image, "label": label}, 0)
    assert out["image"].shape == image.shape  # resized back to the label grid
    assert not torch.allclose(out["image"], image)
    assert torch.equal(out["label"], label) and torch.equal(out["target"], label)
    again = module.on_after_batch_transfer({"image": image, "label": label}, 0)
    assert not torch.equal(again["image"], out["image"])  # the next validation batch has its own seed
    module.on_validation_epoch_start()
    first = module.on_after_batch_transfer({"image": image, "label": label}, 0)["image"]
    assert torch.equal(first, out["image"])  # the same seed for the same batch of every epoch


def test_inconsistent_settings_fail_at_construction() -> None:
    net = _net("care_unet", "semantic", 4)
    with pytest.raises(ValueError, match="outputs 4 channel"):
        SegmentationModule(net, partial(torch.optim.Adam), classes=3)
    with pytest.raises(ValueError, match="boundary_class"):
        SegmentationModule(net, partial(torch.optim.Adam), classes=4, boundary_class=4)


def test_training_learns_discs_and_checkpoints_describe_themselves(trained_discs) -> None:  # noqa: ANN001
    module, ckpt_path, image = trained_discs
    best = module.history[-1]
    assert best["val/iou/interior"] > 0.5 and best["val/f1"] > 0.5
    assert 0 <= best["val/ap"] <= best["val/f1"] <= 1
    assert (ckpt_path.parent / "panels" / "val_epoch014.png").is_file()
    from psr.inference.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt_path)
    assert loaded.out_channels == 3 and loaded.scale == 1
    with torch.no_grad():
        assert torch.allclose(loaded.net(image), module.net.eval()(image), atol=1e-5)


def test_panel_row_draws_prediction_and_labels_over_the_image() -> None:
    image = torch.zeros(1, 8, 8)
    pred = torch.zeros(8, 8, dtype=torch.long)
    pred[2, 2] = 1
    row = panel_row(image, pred, torch.zeros(8, 8, dtype=torch.long))
    assert row.shape == (8, 24, 3)
    assert row[2, 8 + 2, 0] > 0.3 and row[2, 2].max() == 0 and row[2, 16 + 2].max() == 0


def test_class_weights_weigh_the_cross_entropy_per_class() -> None:
    net = _net("care_unet", "semantic", 3)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 1
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 1] = 5.0  # right on the class-1 half, wrong on the class-0 half

    def loss(weights: list[float] | None) -> float:
        module = SegmentationModule(
            net, partial(torch.optim.Adam), classes=3, class_weights=weights, dice_weight=0
        )
        return float(module.loss(logits, target))

    assert loss([1.0, 1.0, 1.0]) == pytest.approx(loss(None))
    assert loss([1.0, 3.0, 1.0]) < loss(None) < loss([3.0, 1.0, 1.0])
