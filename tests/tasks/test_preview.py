from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

from psr.tasks.errors import ConfigError
from psr.tasks.preview import preview


@pytest.mark.parametrize("crappifier", ["poisson", "pssr_fluo"])
def test_preview_writes_one_png(compose_cfg, tmp_path: Path, crappifier: str) -> None:  # noqa: ANN001
    cfg = compose_cfg(f"crappifier={crappifier}", "n_draws=2", config_name="preview")
    path = preview(cfg, n_draws=int(cfg.n_draws), output=str(tmp_path / "out" / "p.png"))
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert np.ptp(image[..., :3]) > 100  # not blank
    assert [p.name for p in path.parent.iterdir()] == ["p.png"]  # no temporary file left


def test_preview_refuses_a_kernel_larger_than_the_patch(compose_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = compose_cfg("crappifier=camera", "+crappifier.steps.0.size=71", config_name="preview")
    with pytest.raises(ConfigError, match="larger than the image"):
        preview(cfg, output=str(tmp_path / "p.png"))
    assert not (tmp_path / "p.png").exists()
