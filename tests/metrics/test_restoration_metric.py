"""RestorationScores: the per-image means of psr's own PSNR and SSIM kernels, summable across processes."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from psr.crappifiers import Downsample
from psr.metrics import psnr, ssim
from psr.metrics.restoration_metric import RestorationScores, image_scores, plane_ssim
from psr.modules.restoration import RestorationModule


def _batches(shape: tuple[int, ...], n: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        target = torch.rand(shape, generator=gen) * 3 + 1
        pred = target + 0.1 * torch.randn(shape, generator=gen)
        baseline = target + 0.3 * torch.randn(shape, generator=gen)
        out.append((pred, target, baseline))
    return out


def _direct_ssim(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image; a volume: the mean over its planes, each with the volume's own range."""
    if x.dim() == 4:
        return ssim(x, target)
    values = []
    for i in range(x.shape[0]):
        rng = float(target[i].max() - target[i].min())
        planes = [
            ssim(x[i : i + 1, :, z], target[i : i + 1, :, z], data_range=rng) for z in range(x.shape[2])
        ]
        values.append(torch.cat(planes).mean())
    return torch.stack(values)


@pytest.mark.parametrize("shape", [(3, 2, 24, 20), (2, 1, 3, 16, 16)])
def test_the_metric_is_the_per_image_mean_of_the_kernels(shape: tuple[int, ...]) -> None:
    batches = _batches(shape, 3)
    metric = RestorationScores()
    for k, (pred, target, baseline) in enumerate(batches):
        metric.update(pred, target, baseline=baseline, loss=torch.tensor(float(k)))
    got = metric.compute()
    preds, targets, baselines = (torch.cat(t) for t in zip(*batches, strict=True))
    expected = {
        "loss": 1.0,  # losses 0, 1, 2 of equally sized batches
        "psnr": psnr(preds, targets).double().mean(),
        "ssim": _direct_ssim(preds, targets).double().mean(),
        "baseline_psnr": psnr(baselines, targets).double().mean(),
        "baseline_ssim": _direct_ssim(baselines, targets).double().mean(),
    }
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(float(value), abs=1e-5), key
    assert int(metric.count) == shape[0] * 3


def test_shards_sum_to_the_whole_as_under_ddp() -> None:
    """DDP sums every state over the processes: two shards merged give the whole set's means."""
    batches = _batches((2, 1, 16, 16), 4, seed=1)
    whole, first, second = RestorationScores(), RestorationScores(), RestorationScores()
    for k, (pred, target, baseline) in enumerate(batches):
        whole.update(pred, target, baseline=baseline)
        (first if k % 2 else second).update(pred, target, baseline=baseline)
    first.merge_state(second)
    merged, expected = first.compute(), whole.compute()
    assert "loss" not in expected
    for key, value in expected.items():
        assert float(merged[key]) == pytest.approx(float(value), rel=1e-12)


def test_baseline_scores_stand_for_the_baseline_images_and_bad_input_is_named() -> None:
    ((pred, target, baseline),) = _batches((2, 1, 16, 16), 1, seed=2)
    by_images, by_scores = RestorationScores(), RestorationScores()
    by_images.update(pred, target, baseline=baseline)
    by_scores.update(pred, target, baseline_scores=image_scores(baseline, target))
    assert by_images.compute() == by_scores.compute()
    assert torch.equal(image_scores(pred, target)[1], plane_ssim(pred, target).double())
    with pytest.raises(ValueError, match="either baseline images or baseline_scores"):
        by_images.update(pred, target)
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        by_images.update(pred, target, baseline_scores=torch.zeros(2, 3))
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert RestorationScores().compute() == {}


class _TinyNet(nn.Module):
    scale, spatial_dims = 2, 2
    in_channels = out_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def _module() -> RestorationModule:
    return RestorationModule(
        net=_TinyNet(),
        crappifier=Downsample(2),
        loss=nn.L1Loss(),
        optimizer=partial(torch.optim.SGD, lr=1e-3),
        panel_dir=None,
        n_panels=0,
    )


def _bilinear_baseline(clean: torch.Tensor) -> torch.Tensor:
    low = Downsample(2)(clean, torch.Generator())
    return nn.functional.interpolate(low, size=clean.shape[-2:], mode="bilinear", align_corners=False)


def _fit(module: RestorationModule, val: list[torch.Tensor], epochs: int) -> None:
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    train = DataLoader(torch.rand(2, 1, 16, 16), batch_size=2)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=DataLoader(torch.stack(val), batch_size=2))


def test_the_baselines_validation_scores_are_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = RestorationModule._score_baseline

    def counted(self, inp, target, real):  # noqa: ANN001, ANN202
        calls.append(inp.shape[0])
        return original(self, inp, target, real)

    monkeypatch.setattr(RestorationModule, "_score_baseline", counted)
    module = _module()
    val = list(torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3)))
    _fit(module, val, epochs=3)
    assert calls == [2, 2]  # two validation batches, scored in the first of three epochs
    history = module.history
    assert len(history) == 3 and len({h["val/baseline_psnr"] for h in history}) == 1
    fresh = RestorationScores()
    inp = torch.stack(val)
    baseline = _bilinear_baseline(inp)
    fresh.update(inp, inp, baseline=baseline)
    assert history[0]["val/baseline_psnr"] == pytest.approx(float(fresh.compute()["baseline_psnr"]), abs=1e-5)
    # Other validation data: the cached scores are not reused.
    _fit(module, [v.flip(-1) for v in val], epochs=4)
    assert calls == [2, 2, 2, 2]


def test_a_new_score_is_one_table_line_logged_for_model_and_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a validation score: a per-image kernel and one line in ``IMAGE_SCORES``; training logs it
    beside PSNR and SSIM, for the model and the baseline, and keeps it in the epoch history."""
    from psr.metrics.image import nrmse
    from psr.metrics.restoration_metric import IMAGE_SCORES

    monkeypatch.setitem(IMAGE_SCORES, "nrmse", partial(nrmse, normalization="min-max"))
    module = _module()
    val = list(torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(5)))
    _fit(module, val, epochs=1)
    (epoch,) = module.history
    assert {"val/nrmse", "val/baseline_nrmse", "val/psnr", "val/baseline_ssim"} <= set(epoch)
    # the logged baseline figure is the kernel's mean over the validation images
    inp = torch.stack(val)
    baseline = _bilinear_baseline(inp)
    expected = nrmse(baseline, inp, normalization="min-max").double().mean()
    assert epoch["val/baseline_nrmse"] == pytest.approx(float(expected), abs=1e-5)
