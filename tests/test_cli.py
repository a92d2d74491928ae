"""The ``psr`` command: subcommands dispatch to the entry points, with their own ``--help``."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra

from psr.cli import APP_DIR, COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def run_psr(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``psr argv...`` in this process: (exit code, stdout, stderr)."""
    GlobalHydra.instance().clear()
    try:
        code: object = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    return (0 if code is None else int(code)), out, err  # type: ignore[call-overload]


def groups_section(help_text: str) -> dict[str, str]:
    """``group → current choice`` from the ``== Configuration groups ==`` section of a Hydra --help."""
    section = help_text.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    return dict(re.findall(r"^(\S+): .*\(now: (\S+)\)$", section, flags=re.M))


def test_every_command_runs_the_repository_file_it_names() -> None:
    """psr/_app links each subcommand to its root entry point or script, and conf/ to conf/."""
    assert (APP_DIR / "conf").resolve() == ROOT / "conf"
    for command in COMMANDS:
        assert command.path.is_file(), command.name
        assert command.path.resolve() == ROOT / command.script, command.name


def test_wheel_ships_every_config_and_the_console_script() -> None:
    """The package data patterns of psr._app cover every YAML file under conf/, so an installed psr
    composes the same configs; and the console script points at psr.cli:main."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["psr"] == "psr.cli:main"
    patterns = project["tool"]["setuptools"]["package-data"]["psr._app"]
    shipped = {p.resolve() for pattern in patterns for p in APP_DIR.glob(pattern)}
    configs = set((ROOT / "conf").rglob("*.yaml"))
    assert configs and configs <= shipped


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_psr(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert re.search(rf"^  {re.escape(command.name)}\s+\S", out, flags=re.M), command.name


def test_unknown_command_is_one_error_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_psr(capsys, "trian", "model=rcan")
    assert code == 2 and out == ""
    assert "invalid choice: 'trian'" in err and "train" in err
    code, out, err = run_psr(capsys)
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == "psr: error: expected a command, one of " + ", ".join(
        c.name for c in COMMANDS
    )


@pytest.mark.parametrize("command, key", [("predict", "tile: 256"), ("export", "format: bioimageio")])
def test_predict_and_export_help_list_no_training_group(
    capsys: pytest.CaptureFixture[str], command: str, key: str
) -> None:
    """predict and export share conf/ with training but have no config group of their own."""
    code, out, _ = run_psr(capsys, command, "--help")
    assert code == 0 and key in out
    assert groups_section(out) == {}
    assert not re.search(r"^(crappifier|discriminator|model|data):", out, flags=re.M)


def test_train_help_lists_its_defaults_tree_with_overrides_applied(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """train lists the groups of its defaults list (current choices after the overrides), and no group
    of evaluate's tree or the W&B sweep specs that also live under conf/."""
    code, out, _ = run_psr(capsys, "train", "model=unet", "--help")
    groups = groups_section(out)
    assert code == 0 and groups["model"] == "unet" and groups["crappifier"] == "poisson"
    assert {"data", "loss", "module", "trainer", "experiment", "hparams_search"} <= set(groups)
    assert groups["experiment"] == "null"
    assert not {"evaluate", "evaluate/data", "sweeps"} & set(groups)


def test_evaluate_help_lists_its_own_data_group(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_psr(capsys, "evaluate", "--help")
    assert code == 0 and re.search(r"^data: .*crappified", out, flags=re.M)
    assert not re.search(r"^(crappifier|model):", out, flags=re.M)


def test_argparse_tool_keeps_its_exit_code_and_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_psr(capsys, "report", str(tmp_path / "missing"))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    code, out, _ = run_psr(capsys, "report", "--help")
    assert code == 0 and out.startswith("usage: psr report ")


@pytest.mark.parametrize("command", ["ingest", "report", "fit-crappifier", "calibrate-noise"])
def test_argparse_tools_name_the_psr_command_in_their_usage(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, _ = run_psr(capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: psr {command} ")


def test_a_fitted_preset_lands_in_the_working_folder_and_trains_from_there(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``psr fit-crappifier`` writes ./conf/crappifier/<name>.yaml (not into psr's own conf/), and
    ``psr train crappifier=<name>`` run from that folder composes it (Hydra searches ./conf too)."""
    import numpy as np
    import tifffile

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    high = rng.integers(200, 4000, (48, 48)).astype(np.uint16)
    tifffile.imwrite("low.tif", rng.poisson(high / 40.0).astype(np.uint16))
    tifffile.imwrite("high.tif", high)
    args = ["--preset", "gaussian", "--low", "low.tif", "--high", "high.tif", "--n-trials", "2"]
    code, out, err = run_psr(capsys, "fit-crappifier", *args, "--crop", "32", "--crops", "1", "--quiet")
    preset = Path("conf/crappifier/fitted_pairs_gaussian.yaml")
    assert code == 0, err
    assert preset.is_file() and not (APP_DIR / "conf" / "crappifier" / preset.name).exists()
    assert "use it as crappifier=fitted_pairs_gaussian (psr train run from this folder" in out
    code, out, err = run_psr(capsys, "train", "crappifier=fitted_pairs_gaussian", "--cfg", "job")
    assert code == 0, err
    assert yaml.safe_load(out)["crappifier"] == yaml.safe_load(preset.read_text())


def test_preset_tools_say_how_to_train_with_what_they_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psr fit-crappifier / calibrate-noise end on how to use the preset, wherever it went; a name given
    to --preset is looked up in the working folder's conf/crappifier first."""
    from psr.calibration.presets import find_preset, usage

    monkeypatch.chdir(tmp_path)
    assert "(psr train run from this folder" in usage(Path("conf/crappifier/mine.yaml"))
    elsewhere = usage(tmp_path / "lab" / "conf" / "crappifier" / "mine.yaml")
    assert f"'hydra.searchpath=[file://{tmp_path / 'lab' / 'conf'}]'" in elsewhere
    assert "once it is in conf/crappifier/" in usage(tmp_path / "mine.yaml")
    packaged = APP_DIR / "conf" / "crappifier"
    assert find_preset("poisson", packaged) == packaged / "poisson.yaml"
    Path("conf/crappifier").mkdir(parents=True)
    Path("conf/crappifier/poisson.yaml").write_text("_target_: psr.crappifiers.noise.PoissonNoise\n")
    assert find_preset("poisson", packaged) == Path("conf/crappifier/poisson.yaml")
    assert find_preset("x/own.yaml", packaged) == Path("x/own.yaml")


def test_console_entry_from_another_folder(tmp_path: Path) -> None:
    """``python -m psr.cli`` (what the console script calls) from a folder with no conf/ in it."""
    result = subprocess.run(
        [sys.executable, "-m", "psr.cli", "predict", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "memory_budget" in result.stdout and groups_section(result.stdout) == {}
    assert not any(tmp_path.iterdir())  # --help writes nothing


def test_ingest_then_open_in_napari_reader(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A microscopist's first steps from their own folder: ``psr ingest`` two TIFFs, then the napari
    plugin's reader opens the store as one layer per image at the physical pixel size."""
    import numpy as np
    import tifffile

    from psr.napari.reader import napari_get_reader

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("cells", "more"):
        tifffile.imwrite(f"{name}.tif", rng.integers(0, 4000, (64, 80), dtype=np.uint16))
    code, out, err = run_psr(
        capsys, "ingest", "cells.tif", "more.tif", "-o", "set.ome.zarr", "--pixel-size", "0.1"
    )
    assert code == 0, err
    assert out.startswith("wrote 2 images")
    reader = napari_get_reader("set.ome.zarr")
    assert reader is not None
    layers = reader("set.ome.zarr")
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["set.ome.zarr/cells", "set.ome.zarr/more"]
    for data, kwargs, _ in layers:
        level0 = data[0] if isinstance(data, list) else data
        assert level0.shape == (64, 80) and kwargs["scale"] == [0.1, 0.1]
    np.testing.assert_array_equal(np.asarray(layers[0][0][0][...]), tifffile.imread("cells.tif"))
