"""The export task: ``conf/export.yaml`` in, a bioimage.io package, ONNX or TorchScript file out.

The only export code that reads a DictConfig; the work is done by the plain functions of ``psr.export``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from psr.tasks.errors import ConfigError

FORMATS = {"bioimageio": ".zip", "onnx": ".onnx", "torchscript": ".pt"}
DEFAULT_DIR = Path("outputs") / "export"


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        return cfg.get(key)
    except MissingMandatoryValue as err:
        hint = " (a checkpoint written by train.py, e.g. outputs/runs/.../checkpoints/best-....ckpt)"
        raise ConfigError(
            f"{key} has no value; set it on the command line ({key}=...){hint if key == 'ckpt' else ''}"
        ) from err


def _test_size(cfg: DictConfig) -> int:
    value = _value(cfg, "test_size")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"test_size={value} is not an integer; expected an input size in pixels such as 64")
    return value


def _str_list(cfg: DictConfig, key: str) -> list[str]:
    value = _value(cfg, key)
    if value is None:
        return []
    items = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
    if isinstance(items, str) or not isinstance(items, list):
        raise ConfigError(f"{key}={items} is not a list; expected e.g. {key}=[a,b]")
    return [str(v) for v in items]


def _check_suffix(output: str, fmt: str) -> None:
    """The output's suffix says what the file is: ``.zip`` for bioimage.io, ``.onnx``, ``.pt``."""
    suffix = Path(output).suffix
    if suffix.lower() != FORMATS[fmt]:
        others = [f for f, s in FORMATS.items() if s == suffix.lower()]
        hint = f", or format={others[0]} for a {suffix} file" if others else ""
        raise ConfigError(
            f"output={output} ends in {suffix or 'no suffix'} but format={fmt} writes a {FORMATS[fmt]} file;"
            f" name it {Path(output).with_suffix(FORMATS[fmt]).name}{hint}"
        )


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export the checkpoint ``cfg.ckpt`` as ``cfg.format``; return a summary of what was written and checked.

    Raises ``ConfigError`` (one sentence) for an unknown format, a missing, corrupt or foreign checkpoint,
    an output that exists (without ``overwrite``) or cannot be written, and an export that does not
    reproduce the model. Nothing is left under the output name then.
    """
    from psr.export.common import ExportError, check_name, check_output, default_name
    from psr.inference.checkpoint import CheckpointError, load_checkpoint

    fmt = str(_value(cfg, "format"))
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt} is not an export format; expected one of {', '.join(FORMATS)}")
    ckpt = _value(cfg, "ckpt")
    if not ckpt:
        raise ConfigError(
            "ckpt has no value; set it on the command line (ckpt=path/to/checkpoints/best-....ckpt)"
        )
    test_size = _test_size(cfg)
    overwrite = bool(_value(cfg, "overwrite"))
    output_value = _value(cfg, "output")
    if output_value:  # fail on the output before the (slow) checkpoint load when it is known already
        _check_suffix(str(output_value), fmt)
        try:
            check_output(str(output_value), overwrite)
        except ExportError as err:
            raise ConfigError(str(err)) from err
    try:
        model = load_checkpoint(str(ckpt))
        name = check_name(str(_value(cfg, "name") or default_name(model)))
        output = Path(str(output_value)) if output_value else DEFAULT_DIR / f"{name}{FORMATS[fmt]}"
        exporter = _exporter(fmt, cfg, name)
        result = exporter(model, output, test_size=test_size, overwrite=overwrite)
    except (CheckpointError, ExportError) as err:
        raise ConfigError(str(err)) from err
    return {
        "format": fmt,
        "output": str(result.path),
        "name": name,
        "checkpoint": str(ckpt),
        "model": str((model.config.get("model") or {}).get("_target_", type(model.net).__name__)),
        "scale": model.scale,
        "max_abs_diff": result.max_abs_diff,
        "checks": result.checks,
        "info": result.info,
    }


def _exporter(fmt: str, cfg: DictConfig, name: str) -> Callable[..., Any]:
    """The export function of a format, with the format-specific settings of the config bound."""
    if fmt == "onnx":
        from psr.export.onnx import export_onnx

        return export_onnx
    if fmt == "torchscript":
        from psr.export.torchscript import export_torchscript

        return export_torchscript
    from psr.export.bioimageio import export_bioimageio

    weights = _str_list(cfg, "weights")
    authors = _str_list(cfg, "authors") or ["psr"]

    def bioimageio(model: Any, output: Path, **kwargs: Any) -> Any:
        return export_bioimageio(model, output, name=name, weights=weights, authors=authors, **kwargs)

    return bioimageio


def summary_line(summary: dict[str, Any]) -> str:
    """One line a user reads at the end of an export."""
    worst = max(summary["max_abs_diff"].values(), default=0.0)
    line = f"psr: wrote {summary['output']} ({summary['format']}, {summary['model'].rsplit('.', 1)[-1]} ×{summary['scale']})"
    line += f"; max |export - PyTorch| {worst:.1e} on {len(summary['max_abs_diff'])} checks"
    checks = {k: v for k, v in summary["checks"].items() if k != "summary"}
    if checks:
        passed = sum(v == "passed" for v in checks.values())
        line += f"; bioimage.io model test {summary['checks']['summary']} ({passed}/{len(checks)} checks)"
    return line
