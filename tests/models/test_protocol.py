"""The generator contract (``psr.models.protocol``): checked once where a model is built, one sentence
when it is not met; the dimensionality is one setting (``model.dims``) that the data follows."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from psr.errors import ConfigError
from psr.models.protocol import ATTRIBUTES, Generator, check_generator
from psr.modules.restoration import RestorationModule
from tests.conftest import config_names
from tests.nets import TinyGenerator


class _Plugin(nn.Module):
    """A third-party generator: not a psr class, it only declares the four integers."""

    def __init__(self) -> None:
        super().__init__()
        self.scale, self.in_channels, self.out_channels, self.spatial_dims = 2, 3, 1, 2
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(self.conv(x), 2)


@pytest.mark.parametrize("name", config_names("model"))
def test_every_built_in_model_is_a_generator(compose_cfg, name: str) -> None:  # noqa: ANN001
    net = instantiate(compose_cfg(f"model={name}").model)
    assert isinstance(net, Generator) and check_generator(net) is net


def test_a_plugin_that_declares_the_contract_is_accepted() -> None:
    net = check_generator(_Plugin(), "model=plugin")
    assert (net.scale, net.in_channels, net.out_channels, net.spatial_dims) == (2, 3, 1, 2)


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_a_missing_attribute_is_one_sentence_naming_it(attribute: str) -> None:
    net = _Plugin()
    delattr(net, attribute)
    with pytest.raises(
        ConfigError, match=rf"model=plugin \(_Plugin\) does not declare {attribute} as integers"
    ):
        check_generator(net, "model=plugin")


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("spatial_dims", 4, "spatial_dims=4; expected 2"),
        ("scale", 0, "scale=0; expected >= 1"),
        ("out_channels", 1.0, "does not declare out_channels as integers"),
    ],
)
def test_an_impossible_value_is_refused(attribute: str, value: object, message: str) -> None:
    net = _Plugin()
    setattr(net, attribute, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_generator(net)


def test_a_plain_layer_or_a_non_module_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"the module's net \(Conv2d\) does not declare scale, spatial_dims as integers"
    ):
        RestorationModule(net=nn.Conv2d(1, 1, 3), crappifier=None, loss=nn.L1Loss(), optimizer=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="builds a function, not a torch.nn.Module"):
        check_generator(lambda x: x, "model=f")


def test_the_module_reads_the_target_channels_from_the_contract() -> None:
    module = RestorationModule(
        net=TinyGenerator(), crappifier=lambda x, g: x, loss=nn.L1Loss(), optimizer=None
    )  # type: ignore[arg-type]
    assert module.out_channels == 1
    assert module.degrade(torch.rand(2, 5, 8, 8), torch.Generator())["target"].shape[1] == 1  # centre frame


@pytest.mark.parametrize(("model", "dims"), [("rcan3d", 3), ("care_unet", 2), ("rcan", 2)])
@pytest.mark.parametrize("data", ["zarr", "demo", "pairs"])
def test_the_data_follows_model_dims(compose_cfg, model: str, dims: int, data: str) -> None:  # noqa: ANN001
    cfg = compose_cfg(f"model={model}", f"data={data}")
    assert cfg.data.spatial_dims == dims == instantiate(cfg.model).spatial_dims
    flipped = 5 - dims
    cfg = compose_cfg(f"model={model}", f"data={data}", f"model.dims={flipped}")
    assert cfg.data.spatial_dims == flipped == instantiate(cfg.model).spatial_dims
