"""Export contract over every model config: each ``conf/model/*.yaml`` (in each dimensionality it supports)
exports to TorchScript and ONNX and the export reproduces eager PyTorch. A new model config is tested the
moment it exists. Untrained (seeded) weights, shrunk where the config has the usual size keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from psr.export.common import round_up, size_steps
from psr.inference.checkpoint import LoadedModel
from tests.conftest import CONF
from tests.models.test_models import Case, _cases

# Size keys set small when a model config has them (others keep their defaults): fast exports. U-Net
# decoders keep their depth (one width per encoder stage) at 8 channels a stage.
TINY_MODEL = {"n_feats": 8, "n_filter_base": 8, "n_groups": 1, "n_blocks": 1, "depth": 1}
TINY_DECODER_WIDTH = 8
# ONNX export traces with torch.export (3-12 s a model on one core): the models tests/export/test_export.py
# already exports to ONNX from trained checkpoints are not traced twice.
ONNX_TESTED_ELSEWHERE = {"rcan-2d-1to1", "unet-2d-1to1", "care_unet-3d-1to1"}


def _tiny(name: str) -> list[str]:
    keys = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    tiny = [f"model.{k}={v}" for k, v in TINY_MODEL.items() if k in keys]
    if "decoder_channels" in keys:
        tiny.append(f"model.decoder_channels={[TINY_DECODER_WIDTH] * len(keys.decoder_channels)}")
    return tiny


def _loaded(compose_cfg: Callable[..., object], case: Case) -> LoadedModel:
    cfg = compose_cfg(*case.overrides(4), *_tiny(case.name))
    torch.manual_seed(0)
    net = instantiate(cfg.model).eval().requires_grad_(False)
    config = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "crappifier")}
    return LoadedModel(net=net, config={**config, "scale": 4}, path=Path(f"{case}.ckpt"))


def _test_size(model: LoadedModel) -> int:
    return round_up(8, size_steps(model)[-1])


@pytest.mark.parametrize("case", _cases(multi_frame=False), ids=str)
def test_every_model_exports_to_torchscript(compose_cfg, tmp_path: Path, case: Case) -> None:  # noqa: ANN001
    from psr.export.torchscript import export_torchscript, load_torchscript, read_metadata

    model = _loaded(compose_cfg, case)
    result = export_torchscript(model, tmp_path / "model.pt", test_size=_test_size(model))
    assert max(result.max_abs_diff.values()) <= 1e-4 and len(result.max_abs_diff) == 2
    meta = read_metadata(result.path)
    assert meta["scale"] == 4 and meta["in_channels"] == 1
    x = torch.rand(1, 1, *((6,) * (case.dims - 2)), *(2 * [_test_size(model)]))
    with torch.no_grad():
        torch.testing.assert_close(load_torchscript(result.path)(x), model.net(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "case", [c for c in _cases(multi_frame=False) if str(c) not in ONNX_TESTED_ELSEWHERE], ids=str
)
def test_every_model_exports_to_onnx(compose_cfg, tmp_path: Path, case: Case) -> None:  # noqa: ANN001
    """Exported at the smallest size it takes (the ResNet-34 U-Net's deepest map is then 1 pixel), the ONNX
    model stays dynamic: onnxruntime reproduces eager PyTorch at another size."""
    from psr.export.onnx import INPUT_NAME, export_onnx, onnx_session, read_metadata

    model = _loaded(compose_cfg, case)
    size = _test_size(model)
    result = export_onnx(model, tmp_path / "model.onnx", test_size=size)
    assert len(result.max_abs_diff) == 2
    assert read_metadata(result.path)["scale"] == 4
    x = torch.rand(3, 1, *(3 * step for step in size_steps(model)[:-2]), 3 * size, 2 * size)
    (out,) = onnx_session(result.path).run(None, {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model.net(x), rtol=1e-5, atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
