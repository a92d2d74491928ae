"""Contract and statistical tests for the degradation operators."""

import math

import pytest
import torch

from psr.crappifiers import Chain, Crappifier, Downsample, GaussianNoise, PoissonNoise


def operators() -> list[Crappifier]:
    return [
        Downsample(2, "area"),
        Downsample(4, "bilinear"),
        Downsample(2, "bicubic"),
        PoissonNoise((10, 100)),
        PoissonNoise(50.0),
        GaussianNoise((0.01, 0.1)),
        GaussianNoise(0.05, clip_min=0.0),
        Chain([Downsample(2), PoissonNoise(30.0), GaussianNoise(0.01)]),
    ]


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@pytest.mark.parametrize("op", operators(), ids=lambda op: repr(op).split("(")[0] + str(id(op) % 97))
def test_contract(op: Crappifier) -> None:
    x = torch.rand(3, 2, 16, 16)
    out = op(x, gen(0))
    assert out.shape == (3, 2, 16 // op.scale, 16 // op.scale)
    assert out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    assert torch.equal(out, op(x, gen(0)))
    if any(isinstance(m, PoissonNoise | GaussianNoise) for m in op.modules()):
        assert not torch.equal(out, op(x, gen(1)))


@pytest.mark.parametrize("mode", ["area", "bilinear"])
def test_downsample_3d_keeps_z(mode: str) -> None:
    x = torch.rand(2, 1, 5, 16, 16)
    assert Downsample(4, mode)(x).shape == (2, 1, 5, 4, 4)


def test_area_downsample_preserves_mean_and_bins_exactly() -> None:
    x = torch.rand(4, 1, 64, 64)
    out = Downsample(4, "area")(x)
    assert torch.allclose(out.mean(), x.mean(), atol=1e-6)
    assert torch.allclose(out[0, 0, 0, 0], x[0, 0, :4, :4].mean())


def test_poisson_variance_is_mean_over_photons() -> None:
    photons = 40.0
    x = torch.full((1, 1, 1000, 1000), 0.5)
    out = PoissonNoise(photons)(x, gen(0))
    assert abs(out.mean().item() - 0.5) < 0.005
    expected = 0.5 / photons
    assert abs(out.var().item() - expected) / expected < 0.05


def test_poisson_range_draws_a_budget_per_sample() -> None:
    x = torch.full((64, 1, 32, 32), 0.5)
    out = PoissonNoise((5, 500))(x, gen(0))
    variances = out.flatten(1).var(1)
    implied = 0.5 / variances
    assert implied.min() < 20 and implied.max() > 150  # spread across the log-uniform range


def test_gaussian_sigma() -> None:
    x = torch.zeros(1, 1, 1000, 1000)
    out = GaussianNoise(0.1)(x, gen(0))
    assert abs(out.std().item() - 0.1) < 0.001
    assert GaussianNoise(0.1, clip_min=0.0)(x, gen(0)).min() >= 0


def test_chain_scale_is_the_product() -> None:
    assert Chain([Downsample(2), PoissonNoise(10.0), Downsample(2)]).scale == 4


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PoissonNoise(-1.0), "photons must be > 0"),
        (lambda: PoissonNoise((0, 10)), "photons must be > 0"),
        (lambda: GaussianNoise(-0.1), "sigma must be >= 0"),
        (lambda: GaussianNoise((0.2, 0.1)), "low > high"),
        (lambda: Downsample(0), "integer >= 1"),
        (lambda: Downsample(2.5), "integer >= 1"),
        (lambda: Downsample(2, "lanczos"), "mode must be one of"),
        (lambda: GaussianNoise((0.1, 0.2, 0.3)), "number or a \\[low, high\\] pair"),
        (lambda: GaussianNoise(math.nan), "finite"),
    ],
)
def test_invalid_parameters_fail_at_construction(build, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_batches_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        Downsample(4)(torch.rand(1, 1, 10, 16))
    with pytest.raises(ValueError, match=r"\(B, C, Y, X\)"):
        PoissonNoise(10.0)(torch.rand(16, 16))
