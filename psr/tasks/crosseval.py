"""Cross-degradation evaluation: a generator trained on one degradation, tested on others and on real pairs.

After training, ``psr.tasks.train`` scores the run's best (else last) generator on every degradation
named in ``cross_eval.crappifiers`` — the cross matrix of a degradation ablation (trained on A, tested on
B). Each test degradation is a crappifier preset composed by name (``conf/crappifier/<name>.yaml``, or an
installed ``psr.crappifiers`` plugin) with the run's ``${scale}``; the run's own choice uses the run's own
crappifier config, command-line tweaks included. Every test degradation sees the same clean held-out
validation patches (the datamodule's ``val_dataloader``), degraded with the seeds validation uses
(:func:`psr.modules.restoration.val_seed_for`), and is scored like validation: per-image PSNR and SSIM with the target's own
max − min as the data range, for the model and the interpolation baseline. The entry of the run's own
degradation therefore reproduces the validation metrics of the epoch the checkpoint was saved at.

``cross_eval.real_pairs`` names ready-made real pair sets (``conf/evaluate/data/<name>.yaml``) that
:func:`psr.tasks.evaluate.evaluate` scores with the CARE convention on whole images; the model and the
bilinear baseline are reported.

:func:`grid_values` is registered as the ``psr.grid`` OmegaConf resolver: it turns a list into a Hydra
sweep (``a,b,c``), so one list in a config both drives ``hydra.sweeper.params`` and names the test
degradations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from psr.tasks.common import check_blank_patch
from psr.tasks.errors import ConfigError

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)

CONF_DIR = (Path(__file__).parents[1] / "_app" / "conf").resolve()
"""The project's config tree (``conf/``): crappifier presets and the evaluation's real pair sets (through
``psr/_app``, so an installed psr finds it too)."""


Degrade = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
Scores = dict[str, float | int]


# --- the psr.grid resolver ------------------------------------------------------------------------
def grid_values(values: Any) -> str:
    """``[a, b, c]`` → ``"a,b,c"``: a list as a Hydra sweep, for ``hydra.sweeper.params``."""
    if isinstance(values, ListConfig):
        values = OmegaConf.to_object(values)
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"psr.grid expects a non-empty list, got {values!r}")
    return ",".join(str(v) for v in values)


def register_resolvers() -> None:
    """Register ``${psr.grid:...}`` once per process (before Hydra instantiates the sweeper)."""
    if not OmegaConf.has_resolver("psr.grid"):
        OmegaConf.register_new_resolver("psr.grid", grid_values)


register_resolvers()


# --- composing configs by name inside a running job ------------------------------------------------
@contextmanager
def _hydra_at(config_dir: Path) -> Iterator[None]:
    """A Hydra instance over ``config_dir`` for the compose API; the running job's instance (if any) is
    put back afterwards."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobRuntime

    global_hydra = GlobalHydra.instance()
    saved = global_hydra.hydra
    # Initialising Hydra renames the job (JobRuntime): keep the running job's name (its log file's name).
    runtime = JobRuntime.instance().conf
    job_name = str(runtime.name) if "name" in runtime else "app"
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), job_name=job_name, version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def _compose(config_dir: Path, config_name: str | None, overrides: list[str], key: str) -> DictConfig:
    from hydra import compose
    from hydra.errors import HydraException

    with _hydra_at(config_dir):
        try:
            return compose(config_name, overrides=overrides)
        except HydraException as err:
            raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from err


def crappifier_names() -> list[str]:
    """Every crappifier choice: the presets under ``conf/crappifier`` and the installed plugins."""
    from psr.crappifiers.plugins import plugin_entry_points

    presets = {p.stem for p in (CONF_DIR / "crappifier").glob("*.yaml")}
    return sorted(presets | set(plugin_entry_points()))


def crappifier_config(name: str, scale: int) -> DictConfig:
    """The resolved config of crappifier ``name`` (a preset or a plugin) at super-resolution ``scale``."""
    if name not in crappifier_names():
        raise ConfigError(
            f"cross_eval.crappifiers names {name!r}, which is not a crappifier; expected one of"
            f" {', '.join(crappifier_names())}"
        )
    cfg = _compose(
        CONF_DIR, None, [f"+crappifier={name}", f"+scale={int(scale)}"], f"cross_eval.crappifiers.{name}"
    )
    node = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(node, DictConfig)
    return node.crappifier


def build_test_crappifiers(
    names: Sequence[str], scale: int, own_name: str, own: Degrade, patch: Sequence[int], channels: int
) -> dict[str, Degrade]:
    """Instantiate every test degradation and check it on one blank patch before training starts.

    ``own_name`` maps to ``own`` (the run's crappifier). Raises ``ConfigError`` naming the degradation
    that does not exist, does not build, or does not turn a patch into the patch divided by ``scale``.
    """
    from hydra.utils import instantiate

    found: dict[str, Degrade] = {}
    for name in names:
        if name in found:
            raise ConfigError(
                f"cross_eval.crappifiers lists {name!r} twice; expected each test degradation once"
            )
        if name == own_name:
            found[name] = own
            continue
        node = crappifier_config(name, scale)
        try:
            crappifier = instantiate(node)
        except Exception as err:  # noqa: BLE001 - anything a third-party constructor raises
            raise ConfigError(f"cross_eval.crappifiers: crappifier {name!r} does not build: {err}") from err
        factor = int(getattr(crappifier, "scale", 1))
        if factor != scale:
            raise ConfigError(
                f"cross_eval.crappifiers: crappifier {name!r} downsamples by {factor} but this run's scale is"
                f" {scale}; test degradations must remove what the model restores"
            )
        check_blank_patch(crappifier, f"cross_eval.crappifiers: crappifier {name!r}", patch, channels, scale)
        found[name] = crappifier
    return found


# --- scoring --------------------------------------------------------------------------------------
def score_degradations(
    net: nn.Module,
    batches: Sequence[torch.Tensor],
    crappifiers: Mapping[str, Degrade],
    val_seed: int,
    baseline_mode: str = "bilinear",
    device: torch.device | str = "cpu",
) -> dict[str, Scores]:
    """Score ``net`` and the ``baseline_mode`` interpolation on ``batches`` degraded by each crappifier.

    ``batches`` are clean patches ``(B, C, [Z,] Y, X)``; batch ``i`` is degraded with a generator on
    ``device`` seeded by :func:`psr.modules.restoration.val_seed_for`. The target is the centre ``out_channels`` of the clean
    patch (multi-frame input). Returns, per crappifier name, the mean over patches of PSNR and SSIM
    (per image, the target's max − min as the data range) of the model and of the baseline, and ``n``.
    """
    from psr.metrics.restoration_metric import RestorationScores
    from psr.models.protocol import check_generator
    from psr.modules.restoration import centre_channels, upsample_to, val_seed_for

    device = torch.device(device)
    out_channels = check_generator(net, "the cross-evaluated model").out_channels
    results: dict[str, Scores] = {}
    was_training = net.training
    net.eval()
    try:
        for name, crappifier in crappifiers.items():
            # Rank 0 alone cross-evaluates: no synchronisation with the other DDP processes.
            scores = RestorationScores(sync_on_compute=False).to(device)
            for i, clean in enumerate(batches):
                clean = clean.to(device).float()
                generator = torch.Generator(device=device).manual_seed(val_seed_for(val_seed, i))
                with torch.no_grad():
                    low = crappifier(clean, generator).float()
                    target = centre_channels(clean, out_channels)
                    pred = net(low).float()
                    size = tuple(target.shape[2:])
                    baseline = upsample_to(centre_channels(low, target.shape[1]), size, baseline_mode)
                    scores.update(pred, target, baseline=baseline)
            if not int(scores.count):
                raise ConfigError(
                    "cross_eval: the data held out no validation patches; set data.val_fraction > 0"
                )
            results[name] = {**{k: float(v) for k, v in scores.compute().items()}, "n": int(scores.count)}
    finally:
        net.train(was_training)
    return results


def validation_batches(loader: Iterable[Any]) -> list[torch.Tensor]:
    """The clean validation patches, once (a few MB: ``val_samples`` patches); real pairs do not qualify."""
    batches: list[torch.Tensor] = []
    for batch in loader:
        if not isinstance(batch, torch.Tensor):
            raise ConfigError(
                "cross_eval.crappifiers needs clean validation patches to degrade, but the data yields"
                f" {type(batch).__name__} batches (real pairs?); set cross_eval.crappifiers=[]"
            )
        batches.append(batch)
    return batches


def real_pair_sets() -> list[str]:
    """The real pair sets ``cross_eval.real_pairs`` can name: ``conf/evaluate/data/*`` but ``crappified``."""
    return sorted(p.stem for p in (CONF_DIR / "evaluate" / "data").glob("*.yaml") if p.stem != "crappified")


def check_real_pairs(names: Sequence[str]) -> None:
    """Raise ``ConfigError`` for a name in ``cross_eval.real_pairs`` that is not a real pair set."""
    for name in names:
        if name not in real_pair_sets():
            raise ConfigError(
                f"cross_eval.real_pairs names {name!r}, which is not a real pair set; expected one of"
                f" {', '.join(real_pair_sets())} (conf/evaluate/data)"
            )


def real_pair_scores(
    names: Sequence[str], checkpoint: str, output_dir: Path, overrides: Sequence[str] = ()
) -> dict[str, Scores]:
    """Evaluate ``checkpoint`` on each ready-made real pair set with :func:`psr.tasks.evaluate.evaluate`.

    Each set's full evaluation (``metrics.csv``, ``summary.json``) lands in ``output_dir/<name>``;
    returned are the model's and the bilinear baseline's CARE-convention PSNR and SSIM and the image count.
    """
    from psr.tasks.evaluate import MODEL, evaluate

    check_real_pairs(names)
    results: dict[str, Scores] = {}
    for name in names:
        out = output_dir / name
        cfg = _compose(
            CONF_DIR / "evaluate",
            "evaluate",
            [
                f"data={name}",
                f"ckpt={checkpoint}",
                f"output_dir={out}",
                "logger=none",  # the training run's W&B run is still open: evaluate must not finish it
                "figures=false",
                *overrides,
            ],
            f"cross_eval.real_pairs.{name}",
        )
        summary = evaluate(cfg)
        methods = {m["method"]: m for m in summary["methods"]}
        baseline = methods.get("bilinear") or methods.get("identity") or {}
        results[name] = {
            "psnr": float(methods[MODEL]["psnr"]),
            "ssim": float(methods[MODEL]["ssim"]),
            "baseline_psnr": float(baseline.get("psnr", float("nan"))),
            "baseline_ssim": float(baseline.get("ssim", float("nan"))),
            "n": int(methods[MODEL]["n"]),
        }
    return results


# --- the configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """``cross_eval.crappifiers``, ``cross_eval.real_pairs`` and ``cross_eval.real_pairs_overrides``."""

    crappifiers: list[str] = field(default_factory=list)
    real_pairs: list[str] = field(default_factory=list)
    real_pairs_overrides: list[str] = field(default_factory=list)


def settings(cfg: DictConfig) -> Settings:
    """The ``cross_eval`` node as lists of strings (a missing node: all empty)."""
    node = cfg.get("cross_eval") or {}

    def strings(key: str) -> list[str]:
        value = node.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, ListConfig | list):
            raise ConfigError(f"cross_eval.{key} is {value!r}; expected a list of names")
        return [str(v) for v in value]

    return Settings(strings("crappifiers"), strings("real_pairs"), strings("real_pairs_overrides"))


def check_ablation(cfg: DictConfig, choices: Mapping[str, str]) -> None:
    """A run of ``experiment=degradation_ablation`` must be one point of its grid (``ablation.*``): a
    sweep overridden on the command line (``crappifier=a,b``) would leave the test degradations behind."""
    grid = cfg.get("ablation")
    if not grid:
        return
    for key, group, value in (
        ("crappifiers", "crappifier", choices["crappifier"]),
        ("models", "model", choices["model"]),
        ("seeds", "seed", str(cfg.seed)),
    ):
        values = [str(v) for v in grid.get(key) or []]
        if values and value not in values:
            raise ConfigError(
                f"{group}={value} is not in ablation.{key}={values}; change the grid with"
                f" ablation.{key}=[...] (the sweep and the test degradations follow it), not {group}=..."
            )


# --- after training -------------------------------------------------------------------------------
def evaluate_after_training(
    cfg: DictConfig,
    parts: dict[str, Any],
    module: Any,
    trainer: L.Trainer,
    summary: dict[str, Any],
    output_dir: Path,
) -> dict[str, Any]:
    """``cross_eval`` and ``real_eval`` of the best (else last) checkpoint; the in-memory generator when
    no checkpoint was written (``debug=fdr``). ``parts`` is what ``psr.tasks.train.build`` returned (its
    ``test_crappifiers`` and the ``cross_eval`` settings parsed there)."""
    test_crappifiers: dict[str, Any] = parts["test_crappifiers"]
    chosen: Settings = parts["cross_eval"]
    real_pairs, real_overrides = chosen.real_pairs, chosen.real_pairs_overrides
    checkpoint = summary.get("best_checkpoint") or summary.get("last_checkpoint")
    out: dict[str, Any] = {"eval_checkpoint": checkpoint, "cross_eval": {}, "real_eval": {}}
    if not test_crappifiers and not real_pairs:
        return out
    device = trainer.strategy.root_device
    if checkpoint:
        from psr.inference.checkpoint import load_checkpoint

        net = load_checkpoint(checkpoint, device=device).net
    else:
        net = module.eval_net
    if test_crappifiers:
        for crappifier in test_crappifiers.values():
            if isinstance(crappifier, torch.nn.Module):
                crappifier.to(device)
        batches = validation_batches(parts["datamodule"].val_dataloader())
        out["cross_eval"] = score_degradations(
            net,
            batches,
            test_crappifiers,
            val_seed=int(cfg.module.get("val_seed", 12345)),
            baseline_mode=str(cfg.module.get("baseline_mode", "bilinear")),
            device=device,
        )
        for name, scores in out["cross_eval"].items():
            log.info(
                "cross_eval %s: PSNR %.2f dB (baseline %.2f dB), SSIM %.3f (baseline %.3f), %d patches",
                name,
                scores["psnr"],
                scores["baseline_psnr"],
                scores["ssim"],
                scores["baseline_ssim"],
                scores["n"],
            )
    if real_pairs:
        if not checkpoint:
            log.warning("cross_eval.real_pairs skipped: this run wrote no checkpoint to evaluate")
        else:
            out["real_eval"] = real_pair_scores(
                real_pairs, checkpoint, output_dir / "real_eval", real_overrides
            )
    return out


def log_evaluations(trainer: L.Trainer, summary: dict[str, Any]) -> None:
    """Send the cross-evaluation figures to the run's loggers (W&B summary, a CSV row)."""
    metrics = {
        f"{kind}/{name}/{key}": float(value)
        for kind in ("cross_eval", "real_eval")
        for name, scores in (summary.get(kind) or {}).items()
        for key, value in scores.items()
    }
    if not metrics:
        return
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
        logger.save()
