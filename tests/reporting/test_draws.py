"""Recording what a crappifier draw did: the operators applied and the parameters sampled, per sample."""

from __future__ import annotations

import pytest
import torch

from psr.crappifiers import Chain, Downsample, GaussianBlur, MultiFrame, OneOf, PoissonNoise, RandomApply
from psr.crappifiers.base import Param
from psr.reporting.draws import Step, recording
from psr.tasks.preview import describe_draw


def _clean(batch: int = 1, channels: int = 1) -> torch.Tensor:
    return torch.rand(batch, channels, 16, 16, generator=torch.Generator().manual_seed(3)) + 0.1


def test_the_steps_and_values_of_one_draw_are_recorded_without_changing_it() -> None:
    chain = Chain(
        [GaussianBlur(sigma=[0.5, 2.0], rotation=0.0), PoissonNoise(photons=[10.0, 100.0]), Downsample(2)]
    )
    x = _clean()
    plain = chain(x, torch.Generator().manual_seed(5))
    with recording(chain) as steps:
        watched = chain(x, torch.Generator().manual_seed(5))
    assert torch.equal(plain, watched)  # watching does not shift the random stream
    assert [s.name for s in steps] == ["GaussianBlur", "PoissonNoise", "Downsample(area)"]
    (sigma,) = steps[0].values["sigma"]
    (photons,) = steps[1].values["photons"]
    assert 0.5 <= sigma <= 2.0 and 10.0 <= photons <= 100.0
    assert set(steps[0].values) == {"sigma"}  # fixed parameters (aspect, rotation) are in the config
    assert steps[2].values == {}
    # the recorded value is the one the draw used: the same generator draws the same first value
    expected = Param(0.5, 2.0).sample(1, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert sigma == pytest.approx(float(expected))
    assert Param.sample.__name__ == "sample" and Param.sample.__qualname__ == "Param.sample"  # restored
    assert all(not m._forward_pre_hooks for m in chain.modules())


def test_skipped_and_unchosen_operators_do_not_appear() -> None:
    chain = Chain(
        [
            RandomApply(GaussianBlur(sigma=[0.5, 2.0]), p=0.0),
            OneOf(
                [PoissonNoise(photons=[10.0, 20.0]), PoissonNoise(photons=[500.0, 600.0])], weights=[0.0, 1.0]
            ),
        ]
    )
    with recording(chain) as steps:
        chain(_clean(), torch.Generator().manual_seed(0))
    assert [s.name for s in steps] == ["PoissonNoise"]
    assert 500.0 <= steps[0].values["photons"][0] <= 600.0


def test_frames_of_a_multi_frame_sample_show_as_a_range() -> None:
    op = MultiFrame(PoissonNoise(photons=[10.0, 1000.0]))
    with recording(op) as steps:
        op(_clean(channels=5), torch.Generator().manual_seed(1))
    values = steps[0].values["photons"]
    assert len(values) == 5
    assert steps[0].describe() == f"PoissonNoise photons={min(values):.3g}–{max(values):.3g}"


def test_a_draw_is_described_in_short_wrapped_lines() -> None:
    steps = [
        Step("GaussianBlur", {"sigma": [1.23456]}),
        Step("PoissonNoise", {"photons": [312.4]}),
        Step("Downsample(area)"),
    ]
    text = describe_draw(steps, width=30)
    assert text.replace("\n", " ") == "GaussianBlur sigma=1.23 → PoissonNoise photons=312 → Downsample(area)"
    assert all(len(line) <= 30 for line in text.splitlines())
    assert describe_draw([]) == "no operator applied"


def test_the_preview_labels_each_draw_and_has_one_residual_colour_bar(
    compose_cfg, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    from psr.tasks import preview as task

    captured = {}

    def keep(fig, path):  # noqa: ANN001, ANN202
        captured["fig"] = fig
        return path

    monkeypatch.setattr(task, "save_figure", keep)
    cfg = compose_cfg("crappifier=poisson", "n_draws=2", config_name="preview")
    task.preview(cfg, n_draws=2, output=str(tmp_path / "p.png"), n_patches=2)
    fig = captured["fig"]
    labels = [ax.get_xlabel().replace("\n", " ") for ax in fig.axes]
    labels = [label for label in labels if "PoissonNoise photons=" in label]
    assert len(labels) == 2 * 2  # one per degraded tile
    assert (
        all(label.startswith("Downsample(area) → ") for label in labels) and len(set(labels)) == 4
    )  # each draw its own values
    residuals = [ax.images[0] for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == "RdBu_r"]
    assert len(residuals) == 4 and len({im.get_clim() for im in residuals}) == 1  # one shared range
    lo, hi = residuals[0].get_clim()
    assert lo == -hi < 0
    bars = [ax for ax in fig.axes if "residual: degraded − clean" in ax.get_ylabel()]
    assert len(bars) == 1
