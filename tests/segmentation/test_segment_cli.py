"""``psr segment``: the segmentation entry as a subcommand of the psr command, with its own --help."""

from __future__ import annotations

import pytest

from psr.cli import BY_NAME
from tests.test_cli import ROOT, groups_section, run_psr


def test_segment_is_a_psr_command_running_segment_py() -> None:
    assert BY_NAME["segment"].path.resolve() == ROOT / "segment.py"


def test_segment_help_lists_segmentation_groups(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_psr(capsys, "segment", "experiment=stardist_nuclei", "--help")
    assert code == 0
    assert out.startswith("segment: train a segmentation model on labelled images")
    groups = groups_section(out)
    assert groups["data"] == "labelled" and groups["module"] == "segmentation"
    assert groups["experiment"] == "stardist_nuclei" and groups["crappifier"] == "null"
    # training's restoration-only groups and evaluate's tree are not segment's
    assert not {"loss", "discriminator", "gan_loss", "hparams_search", "evaluate", "sweeps"} & set(groups)
    assert "mode: instance" in out.split("== Config ==", 1)[1]
