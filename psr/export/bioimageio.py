"""bioimage.io model packages (format 0.5) of psr generators, built with bioimageio.spec's classes and
tested with bioimageio.core's own model test before the zip appears.

The package holds:

- ``pytorch_state_dict`` weights first (the primary format: the architecture is the psr model class,
  ``ArchitectureFromLibraryDescr`` with the constructor arguments from the checkpoint's config), then
  TorchScript and/or ONNX weights converted from it (``parent: pytorch_state_dict``);
- input ``(batch, channel, [z,] y, x)`` with sizes ``min + n·step`` (step: the multiple the model needs,
  ``psr.export.common.size_steps``; min: above twice the halo), output ``(batch, channel, [z,] y, x)``
  whose Y and X reference the input at the model's scale (input axes carry ``scale = s``, output axes 1,
  so output size = s · input size) with a halo for tiling (the model's effective receptive field);
- preprocessing ``scale_range`` with the checkpoint's percentiles per sample and channel (how psr
  normalised its training data), no postprocessing (outputs are in those normalised units);
- test input/output tensors computed by the model, a cover (input | output), a README from the
  checkpoint's config, authors, license (BSD-3-Clause) and the PSSR citation.

The package content is written by ``psr.export.content``, the description by ``psr.export.rdf``; this
module assembles, packages, tests and reads back.

Offline: bioimageio.spec checks URLs and downloads files when its IO checks are on. psr turns them off
(``BIOIMAGEIO_PERFORM_IO_CHECKS=false`` unless set otherwise) and puts no URL in the description, so
building, packaging and the model test (which re-reads the zip with local IO checks: hashes, file
contents) need no network.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psr.export.common import (
    ATOL,
    ExportError,
    ExportResult,
    as_loaded,
    check_name,
    check_output,
    default_name,
    first_line,
    model_class,
    shape_name,
    staged_output,
    verification_shapes,
)
from psr.export.content import predict_normalised, sample_input_image, write_cover, write_readme
from psr.export.onnx import verify_onnx, write_onnx
from psr.export.rdf import build_description, package_geometry  # also turns bioimageio's IO checks off
from psr.export.torchscript import write_torchscript
from psr.inference.checkpoint import CheckpointError, LoadedModel, read_checkpoint

WEIGHT_FORMATS = ("torchscript", "onnx")


@contextmanager
def _quiet_bioimageio() -> Iterator[None]:
    """bioimageio logs validation chatter through loguru: keep it off the console (results are returned)."""
    import gc
    import warnings

    from loguru import logger

    logger.disable("bioimageio")
    # bioimageio.core runs gc.collect() each time it unloads a model (six times per weight format in the
    # model test): with torch's objects frozen out of the collector's reach that costs milliseconds, not
    # most of a second each.
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation, in the test
            yield
    finally:
        gc.unfreeze()
        logger.enable("bioimageio")


def run_model_test(package: str | Path) -> dict[str, str]:
    """bioimageio.core's model test of a package, offline; ``{check name: status}`` with the overall status
    under ``"summary"``. Every weight format is tested: test outputs reproduced from test inputs, and
    inference for batch sizes 1 and 2 at three parameterized sizes."""
    from bioimageio.core import test_model

    with _quiet_bioimageio():
        summary = test_model(str(package))
    checks = {"summary": str(summary.status)}
    for detail in summary.details:
        key = detail.name
        while key in checks:
            key += " "
        checks[key] = str(detail.status)
    failed = [d for d in summary.details if d.status == "failed"]
    if failed:
        errors = [e.msg for d in failed for e in d.errors]
        checks["summary"] = "failed"
        checks["first error"] = f"{failed[0].name}: {errors[0] if errors else 'no message'}"
    return checks


def export_bioimageio(
    model: LoadedModel | str | Path,
    output: str | Path,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] = ("psr",),
    test_size: int = 64,
    weights: Sequence[str] = WEIGHT_FORMATS,
    overwrite: bool = False,
    atol: float = ATOL,
) -> ExportResult:
    """Export a generator (a ``LoadedModel`` or a checkpoint path) as a bioimage.io model zip at ``output``.

    ``weights``: the formats added to the primary ``pytorch_state_dict`` (``torchscript``, ``onnx``). Each
    is verified against eager PyTorch within ``atol``; then bioimageio.core's model test runs on the
    finished zip, and only a zip whose test status is "passed" is renamed to ``output``. Raises
    ``ExportError`` (or ``CheckpointError``) with one sentence otherwise.
    """
    unknown = sorted(set(weights) - set(WEIGHT_FORMATS))
    if unknown:
        raise ExportError(
            f"weights={list(weights)} names unknown format(s) {unknown}; expected any of {list(WEIGHT_FORMATS)}"
        )
    check_output(output, overwrite)
    loaded = as_loaded(model)
    name = check_name(name or default_name(loaded))
    authors = [str(a) for a in authors] or ["psr"]
    for author in authors:
        if "/" in author or not author.strip():
            raise ExportError(f"author name {author!r} is not valid; expected a non-empty name without '/'")
    module, cls = model_class(loaded)
    description = description or (
        f"{'Super-resolution (×' + str(loaded.scale) + ') and restoration' if loaded.scale > 1 else 'Restoration'}"
        f" of {loaded.spatial_dims}D microscopy images with {cls}, trained by psr the PSSR way: clean images"
        " degraded on the fly by a crappifier, the network learning to undo it."
    )
    geometry, spatial = package_geometry(loaded, test_size)
    shapes = verification_shapes(loaded, test_size)
    try:
        ckpt: dict[str, Any] | None = read_checkpoint(loaded.path)
    except CheckpointError:
        ckpt = None
    result = ExportResult(path=Path(output), format="bioimageio")
    with (
        staged_output(output, overwrite) as tmp_zip,
        tempfile.TemporaryDirectory(prefix="psr-bioimageio-") as wd,
    ):
        work = Path(wd)
        files = {
            "state_dict": work / "weights.pt",
            "torchscript": work / "weights_torchscript.pt",
            "onnx": work / "weights.onnx",
            "test_input": work / "test_input.npy",
            "test_output": work / "test_output.npy",
            "sample_input": work / "sample_input.tif",
            "sample_output": work / "sample_output.tif",
            "cover": work / "cover.png",
            "readme": work / "README.md",
        }
        torch.save(loaded.net.state_dict(), files["state_dict"])
        opset = None
        if "torchscript" in weights:
            diffs = write_torchscript(loaded, files["torchscript"], shapes, atol)
            result.max_abs_diff.update({f"torchscript {k}": v for k, v in diffs.items()})
        if "onnx" in weights:
            opset = write_onnx(loaded, files["onnx"], shapes[0])
            diffs = verify_onnx(loaded.net, files["onnx"], shapes, atol)
            result.max_abs_diff.update({f"onnx {k}": v for k, v in diffs.items()})
        raw = sample_input_image(loaded, spatial)
        _, out = predict_normalised(loaded, raw)
        np.save(files["test_input"], raw)
        np.save(files["test_output"], out)
        import tifffile

        tifffile.imwrite(files["sample_input"], raw[0].squeeze())  # for people and viewers; .npy for tests
        tifffile.imwrite(files["sample_output"], out[0].squeeze())
        write_cover(raw, out, loaded.scale, f"{name}: {cls} ×{loaded.scale}", files["cover"])
        formats = ["pytorch_state_dict", *weights]
        write_readme(loaded, name, description, geometry, formats, ckpt, files["readme"])
        descr = build_description(
            loaded,
            files,
            name=name,
            description=description,
            authors=authors,
            geometry=geometry,
            weights=weights,
            opset=opset,
        )
        from bioimageio.spec import save_bioimageio_package

        try:
            with _quiet_bioimageio():
                save_bioimageio_package(descr, output_path=tmp_zip)
        except Exception as err:  # noqa: BLE001 - packaging errors come from pydantic, zipfile, IO
            raise ExportError(f"packaging the bioimage.io model failed: {first_line(err)}") from err
        result.checks = run_model_test(tmp_zip)
        if result.checks["summary"] != "passed":
            raise ExportError(
                f"bioimageio.core's model test did not pass ({result.checks.get('first error', 'no detail')});"
                f" nothing was written to {output}"
            )
    result.info = {
        "weights": formats,
        "opset": opset,
        "test_input_shape": shape_name(raw.shape),
        "geometry": geometry,
        "halo_output_pixels": {a: g["halo"] * (loaded.scale if a != "z" else 1) for a, g in geometry.items()},
        "parameters": sum(p.numel() for p in loaded.net.parameters()),
        "bioimageio_io_checks": os.environ.get("BIOIMAGEIO_PERFORM_IO_CHECKS"),
    }
    return result


def predict_with_bioimageio(
    package: str | Path, image: np.ndarray, weight_format: str | None = None
) -> np.ndarray:
    """Run a bioimage.io package on a raw image ``(B, C, [Z,] Y, X)`` with bioimageio.core: its preprocessing,
    then the weights of ``weight_format`` (default: bioimageio.core's choice) on the whole image.

    Like psr's own prediction, the image is not padded by the halo (bioimageio.core's ``predict`` pads it
    symmetrically, which also shifts the percentiles the preprocessing computes); the image size must be
    a valid input size of the package.
    """
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_model_description

    with _quiet_bioimageio():
        descr = load_model_description(str(package), perform_io_checks=False)
        with create_prediction_pipeline(descr, weights_format=weight_format) as pipeline:  # type: ignore[arg-type]
            sample = create_sample_for_model(descr, inputs=image, sample_id="psr")
            result = pipeline.predict_sample_without_blocking(
                sample, skip_input_padding=True, skip_output_cropping=True
            )
    (tensor,) = result.members.values()
    return np.asarray(tensor.data)
