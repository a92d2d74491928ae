"""Contract tests over every crappifier config: files added to conf/crappifier/ are tested at once."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import config_names


@pytest.mark.parametrize("name", config_names("crappifier"))
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_preset_contract(compose_cfg, name: str, scale: int) -> None:  # noqa: ANN001
    op = instantiate(compose_cfg(f"crappifier={name}", f"scale={scale}").crappifier)
    assert op.scale == scale
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    a = op(x, torch.Generator().manual_seed(0))
    assert a.shape == (4, 1, 64 // scale, 64 // scale)
    assert a.dtype == x.dtype
    assert torch.isfinite(a).all()
    assert torch.equal(a, op(x, torch.Generator().manual_seed(0)))
    if name != "none":
        assert not torch.equal(a, op(x, torch.Generator().manual_seed(1)))
    # Degradations keep the intensity scale: the mean of a mid-grey image stays near it.
    flat = op(torch.full((4, 1, 64, 64), 0.5), torch.Generator().manual_seed(0))
    assert abs(flat.mean().item() - 0.5) < 0.1
