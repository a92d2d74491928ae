"""Third-party crappifiers registered as ``psr.crappifiers`` entry points, usable with no yaml file.

Each test installs a fake distribution into its ``tmp_path`` (a module and a ``*.dist-info`` folder with
``entry_points.txt``) and puts it on ``sys.path`` while the test runs, as ``pip install`` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from psr.crappifiers import Crappifier
from psr.crappifiers.plugins import (
    ENTRY_POINT_GROUP,
    PluginImportError,
    PluginTypeError,
    config_from_signature,
    load_crappifier,
    plugin_entry_points,
)
from tests.conftest import ROOT, TINY, config_names

MODULE = "psr_plugin_fixture"

PLUGIN_SOURCE = '''
"""Crappifiers of a fake third-party package."""

import torch
import torch.nn.functional as F

from psr.crappifiers.base import Crappifier


class AddConstant(Crappifier):
    """Add ``value`` to every pixel (scale 1)."""

    def __init__(self, value: float = 0.1, clip: tuple[float, float] = (0.0, 1.0), *, note: str = "add",
                 device: torch.device = torch.device("cpu"), **kwargs: object) -> None:
        super().__init__()
        self.value, self.clip, self.note = value, clip, note

    def forward(self, x, generator=None):
        return (x + self.value).clamp(*self.clip)


class Gain(Crappifier):
    """Multiply by a mandatory ``gain``."""

    def __init__(self, gain: float, offsets: dict | None = None) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x, generator=None):
        return x * self.gain


class AreaBin(Crappifier):
    """Average ``factor`` x ``factor`` blocks, then add Gaussian noise of standard deviation ``sigma``."""

    def __init__(self, factor: int = 2, sigma: float = 0.0) -> None:
        super().__init__()
        self.factor, self.sigma = int(factor), float(sigma)
        self.scale = self.factor

    def forward(self, x, generator=None):
        y = F.avg_pool2d(x, self.factor)
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return y + self.sigma * noise


class NotACrappifier(torch.nn.Module):
    pass


def make_crappifier():
    return AddConstant()
'''

ENTRY_POINTS = f"""
[{ENTRY_POINT_GROUP}]
addconst = {MODULE}:AddConstant
gain = {MODULE}:Gain
areabin = {MODULE}:AreaBin
notcrap = {MODULE}:NotACrappifier
factory = {MODULE}:make_crappifier
missing = {MODULE}:NoSuchClass
poisson = {MODULE}:AddConstant
"""


def install_fake_distribution(site: Path) -> Path:
    """Write a plugin module and its ``dist-info`` (with entry points) into ``site``; return ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{MODULE}.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    info = site / "psr_plugin_fixture-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: psr-plugin-fixture\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS.lstrip())
    return site


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fake distribution, importable and visible to ``importlib.metadata`` during the test."""
    site = install_fake_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop(MODULE, None)


def test_entry_points_are_read_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "addconst" not in plugin_entry_points()
    monkeypatch.syspath_prepend(str(install_fake_distribution(tmp_path / "site")))
    found = plugin_entry_points()
    assert found["addconst"].value == f"{MODULE}:AddConstant"
    assert {"gain", "areabin", "notcrap"} <= set(found)


def test_config_from_signature(plugin_site: Path) -> None:  # noqa: ARG001
    eps = plugin_entry_points()
    add = config_from_signature(load_crappifier(eps["addconst"]))
    # The tuple default becomes a list; the torch.device default and **kwargs are left out.
    assert add == {
        "_target_": f"{MODULE}.AddConstant",
        "value": 0.1,
        "clip": [0.0, 1.0],
        "note": "add",
    }
    assert config_from_signature(load_crappifier(eps["gain"])) == {
        "_target_": f"{MODULE}.Gain",
        "gain": "???",
        "offsets": None,
    }
    assert config_from_signature(load_crappifier(eps["areabin"])) == {
        "_target_": f"{MODULE}.AreaBin",
        "factor": "${scale}",
        "sigma": 0.0,
    }


def test_config_from_signature_rejects_non_crappifiers() -> None:
    with pytest.raises(TypeError, match="subclass of psr.crappifiers.Crappifier, got class builtins.dict"):
        config_from_signature(dict)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("notcrap", f"class {MODULE}.NotACrappifier"),
        ("factory", f"function {MODULE}.make_crappifier"),
    ],
)
def test_entry_point_that_is_not_a_crappifier_is_a_clear_type_error(
    plugin_site: Path,  # noqa: ARG001
    name: str,
    found: str,
) -> None:
    ep = plugin_entry_points()[name]
    message = (
        f"crappifier plugin '{name}' ({ENTRY_POINT_GROUP} entry point '{ep.value}') must name a subclass "
        f"of psr.crappifiers.Crappifier, but it loads {found}"
    )
    with pytest.raises(TypeError) as err:
        load_crappifier(ep)
    assert str(err.value) == message


def test_entry_point_that_cannot_be_imported_names_it(plugin_site: Path) -> None:  # noqa: ARG001
    with pytest.raises(ImportError, match=f"crappifier plugin 'missing' .*{MODULE}:NoSuchClass"):
        load_crappifier(plugin_entry_points()["missing"])


def test_plugin_composes_without_yaml_and_takes_overrides(plugin_site: Path, compose_cfg) -> None:  # noqa: ANN001, ARG001
    cfg = compose_cfg("crappifier=addconst", "crappifier.value=0.5", "crappifier.clip=[0,2]", "scale=1")
    assert OmegaConf.to_container(cfg.crappifier) == {
        "_target_": f"{MODULE}.AddConstant",
        "value": 0.5,
        "clip": [0, 2],
        "note": "add",
    }
    op = instantiate(cfg.crappifier)
    assert isinstance(op, Crappifier) and type(op).__name__ == "AddConstant"
    assert op.value == 0.5 and op.scale == 1
    out = op(torch.zeros(1, 1, 4, 4))
    assert torch.allclose(out, torch.full_like(out, 0.5))


def test_plugin_factor_follows_the_top_level_scale(plugin_site: Path, compose_cfg) -> None:  # noqa: ANN001, ARG001
    cfg = compose_cfg("crappifier=areabin")
    assert cfg.crappifier.factor == cfg.scale == 4
    assert instantiate(cfg.crappifier).scale == 4
    cfg = compose_cfg("crappifier=areabin", "scale=2", "crappifier.sigma=0.3")
    op = instantiate(cfg.crappifier)
    assert (op.scale, op.sigma) == (2, 0.3)
    assert op(torch.rand(2, 1, 8, 8)).shape == (2, 1, 4, 4)


def test_mandatory_parameter_must_be_given(plugin_site: Path, compose_cfg) -> None:  # noqa: ANN001, ARG001
    cfg = compose_cfg("crappifier=gain")
    assert OmegaConf.is_missing(cfg.crappifier, "gain")
    with pytest.raises(Exception, match="Missing mandatory value: crappifier.gain"):
        instantiate(cfg.crappifier)
    assert instantiate(compose_cfg("crappifier=gain", "crappifier.gain=2.5").crappifier).gain == 2.5


def test_builtin_yaml_wins_over_a_plugin_of_the_same_name(plugin_site: Path, compose_cfg) -> None:  # noqa: ANN001, ARG001
    assert "poisson" in plugin_entry_points()
    cfg = compose_cfg("crappifier=poisson")
    assert cfg.crappifier._target_ == "psr.crappifiers.Chain"


def test_unknown_name_lists_yaml_configs_and_plugins(plugin_site: Path, compose_cfg) -> None:  # noqa: ANN001, ARG001
    with pytest.raises(MissingConfigException) as err:
        compose_cfg("crappifier=nope")
    message = str(err.value)
    assert "Could not find 'crappifier/nope'" in message
    options = message.split("Available options in 'crappifier':")[1].split()
    for name in [*config_names("crappifier"), "addconst", "areabin", "gain"]:
        assert name in options


def test_not_a_crappifier_fails_at_composition(plugin_site: Path, compose_cfg) -> None:  # noqa: ANN001, ARG001
    with pytest.raises(TypeError, match="crappifier plugin 'notcrap'"):
        compose_cfg("crappifier=notcrap")


def run_train_cli(*args: str, site: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """``python train.py ARGS`` in a fresh process that sees the fake distribution through PYTHONPATH."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "PSR_CACHE_DIR": str(cache),
        "WANDB_MODE": "disabled",
    }
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_train_cli_reports_a_bad_plugin_in_one_line(
    plugin_site: Path, tmp_path: Path, cache_dir: Path
) -> None:
    result = run_train_cli(
        "crappifier=notcrap", f"hydra.run.dir={tmp_path / 'run'}", site=plugin_site, cache=cache_dir
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith(
        "crappifier plugin 'notcrap' (psr.crappifiers entry point"
    )


@pytest.mark.slow
def test_train_cli_runs_a_plugin_crappifier(plugin_site: Path, tmp_path: Path, cache_dir: Path) -> None:
    run = tmp_path / "run"
    args = [
        "crappifier=areabin",
        "crappifier.sigma=0.01",
        "scale=2",
        "debug=fdr",
        *TINY,
        f"hydra.run.dir={run}",
    ]
    result = run_train_cli(*args, site=plugin_site, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["crappifier"] == "areabin"
    assert summary["scale"] == 2
    resolved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert resolved.crappifier == {"_target_": f"{MODULE}.AreaBin", "factor": "${scale}", "sigma": 0.01}


def test_every_installed_plugin_passes_the_operator_contract(plugin_site: Path) -> None:  # noqa: ARG001
    """The entry points of every installed distribution (here with the fake one) are discovered and each
    operator that takes no mandatory argument runs the operators' contract; only the fake distribution's
    deliberately broken entries may fail to load (their errors have their own tests)."""
    from tests.crappifiers.test_operators import check_contract, default_constructible

    loaded: dict[str, type[Crappifier]] = {}
    for name, ep in sorted(plugin_entry_points().items()):
        try:
            loaded[name] = load_crappifier(ep)
        except (PluginImportError, PluginTypeError):
            assert ep.value.startswith(f"{MODULE}:"), f"installed crappifier plugin {name!r} does not load"
    assert {"addconst", "areabin", "gain"} <= set(loaded)
    tested = [name for name, cls in loaded.items() if default_constructible(cls)]
    for name in tested:
        check_contract(loaded[name](), 2, None)
    assert {"addconst", "areabin"} <= set(tested) and "gain" not in tested  # gain has a mandatory argument
