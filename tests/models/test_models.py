"""Contract tests over every model config: shapes per scale, gradients, determinism in eval mode."""

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import config_names


@pytest.mark.parametrize("name", config_names("model"))
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_model_contract(compose_cfg, name: str, scale: int) -> None:  # noqa: ANN001
    cfg = compose_cfg(f"model={name}", f"scale={scale}")
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    assert net.scale == scale
    x = torch.rand(2, 1, 12, 10)
    out = net(x)
    assert out.shape == (2, 1, 12 * scale, 10 * scale)
    out.abs().mean().backward()
    missing = [
        n
        for n, p in net.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing, f"no finite gradient reached {missing[:5]}"
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("name", config_names("model"))
def test_model_rejects_wrong_channels(compose_cfg, name: str) -> None:  # noqa: ANN001
    net = instantiate(compose_cfg(f"model={name}").model)
    with pytest.raises(ValueError, match="expects"):
        net(torch.rand(1, 3, 16, 16))
