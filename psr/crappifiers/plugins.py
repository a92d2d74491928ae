"""Third-party crappifiers: entry points in the ``psr.crappifiers`` group become ``crappifier=<name>``.

A package declares a degradation operator in its ``pyproject.toml``::

    [project.entry-points."psr.crappifiers"]
    blur = "mypkg.blur:GaussianBlur"

and, once installed, ``python train.py crappifier=blur crappifier.sigma=2.0`` works with no yaml file: the
config is built from the class's constructor signature (:func:`config_from_signature`) by a Hydra config
source (:class:`CrappifierPluginSource`) that :class:`CrappifierSearchPathPlugin` appends to the search
path. Hydra finds that search-path plugin through ``hydra_plugins.psr_crappifier_plugins``. The source is
appended after the application's own ``conf/``, so a ``conf/crappifier/<name>.yaml`` always wins over a
plugin of the same name.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.errors import CompactHydraException
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from psr.crappifiers.base import Crappifier

ENTRY_POINT_GROUP = "psr.crappifiers"
"""The entry-point group third-party packages register their ``Crappifier`` subclasses under."""

CONFIG_GROUP = "crappifier"
"""The Hydra config group the plugins are served in."""

SCHEME = "psr-plugins"
"""The URL scheme of :class:`CrappifierPluginSource` in Hydra's config search path."""

MISSING = "???"
"""OmegaConf's mandatory-value marker, given to constructor parameters without a default."""

SCALE_PARAMETERS = frozenset({"factor", "scale"})
"""Constructor parameters bound to the top-level ``${scale}`` (the super-resolution factor)."""

_SKIP = object()  # a default that is not a plain YAML value


class PluginTypeError(CompactHydraException, TypeError):
    """An entry point that does not name a ``Crappifier`` subclass.

    A ``TypeError``; being also a compact Hydra error, ``train.py`` prints its one-line message instead
    of a stack trace when it is raised while composing the config.
    """


class PluginImportError(CompactHydraException, ImportError):
    """An entry point whose module or attribute cannot be imported (also a compact Hydra error)."""


def plugin_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed ``psr.crappifiers`` entry points by name, read afresh on every call.

    Nothing is cached, so a distribution put on ``sys.path`` at run time is seen by the next call. When
    two distributions declare the same name, the first on ``sys.path`` wins (as for imports).
    """
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _describe(obj: object) -> str:
    """A short description of what an entry point loaded, for error messages."""
    if inspect.isclass(obj):
        return f"class {obj.__module__}.{obj.__qualname__}"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is not None:
        return f"{type(obj).__name__} {getattr(obj, '__module__', '?')}.{name}"
    return f"{type(obj).__name__} {obj!r:.80}"


def load_crappifier(ep: importlib.metadata.EntryPoint) -> type[Crappifier]:
    """Import the class an entry point names and check that it subclasses :class:`Crappifier`.

    Raises :class:`PluginImportError` (an ``ImportError``) naming the entry point when it cannot be
    imported, and :class:`PluginTypeError` (a ``TypeError``) naming the entry point and what it found
    when that is not a ``Crappifier`` subclass.
    """
    try:
        obj = ep.load()
    except (ImportError, AttributeError) as err:
        raise PluginImportError(
            f"crappifier plugin {ep.name!r} ({ENTRY_POINT_GROUP} entry point {ep.value!r}) "
            f"could not be imported: {err}"
        ) from err
    if not (inspect.isclass(obj) and issubclass(obj, Crappifier)):
        raise PluginTypeError(
            f"crappifier plugin {ep.name!r} ({ENTRY_POINT_GROUP} entry point {ep.value!r}) must name a "
            f"subclass of psr.crappifiers.Crappifier, but it loads {_describe(obj)}"
        )
    return obj


def _plain(value: Any) -> Any:
    """``value`` as a plain YAML value (tuples become lists), or ``_SKIP`` when it has no YAML form."""
    if value is None or type(value) in (bool, int, float):  # exact types: enums are left out
        return value
    if type(value) is str:
        # "${...}" would be read as an interpolation and "???" as a mandatory value: keep the class default.
        return _SKIP if ("${" in value or value == MISSING) else value
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else items
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            return _SKIP
        entries = {k: _plain(v) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in entries.values()) else entries
    return _SKIP


def config_from_signature(cls: type[Crappifier]) -> dict[str, Any]:
    """A Hydra config for ``cls``, built from the signature of ``cls.__init__``.

    The result is ``{"_target_": "module.Class", parameter: default, ...}``:

    - a parameter named ``factor`` or ``scale`` becomes ``"${scale}"``, so the top-level super-resolution
      factor flows in as it does for the built-in configs;
    - a parameter without a default becomes ``"???"`` (mandatory: set it on the command line);
    - a default that is a plain YAML value (number, string, bool, None, or lists/dicts of those) is
      copied, tuples becoming lists; other defaults (objects, enums, tensors) are left out, so the class
      keeps its own default and ``+crappifier.<name>=...`` can still set them;
    - ``self``, positional-only parameters, ``*args`` and ``**kwargs`` are skipped.

    Raises ``TypeError`` when ``cls`` is not a subclass of :class:`Crappifier`.
    """
    if not (inspect.isclass(cls) and issubclass(cls, Crappifier)):
        raise TypeError(f"expected a subclass of psr.crappifiers.Crappifier, got {_describe(cls)}")
    config: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    try:
        parameters = list(inspect.signature(cls.__init__).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature (e.g. implemented in C)
        return config
    for index, param in enumerate(parameters):
        if index == 0 and param.name == "self":
            continue
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            continue
        if param.name in SCALE_PARAMETERS:
            config[param.name] = "${scale}"
        elif param.default is param.empty:
            config[param.name] = MISSING
        else:
            value = _plain(param.default)
            if value is not _SKIP:
                config[param.name] = value
    return config


class CrappifierPluginSource(ConfigSource):
    """A Hydra config source serving ``crappifier/<name>`` for every ``psr.crappifiers`` entry point.

    Entry points are re-read on every query, so plugins installed while a process runs are listed; the
    class is only imported when its config is loaded.
    """

    @staticmethod
    def scheme() -> str:
        return SCHEME

    @staticmethod
    def _split(config_path: str) -> tuple[str, str]:
        """``"crappifier/blur.yaml"`` → ``("crappifier", "blur")``; a bare group gives ``(group, "")``."""
        path = config_path.strip("/")
        if path.endswith(".yaml"):
            path = path[: -len(".yaml")]
        group, _, name = path.rpartition("/")
        return (group, name) if group else (name, "")

    def _entry_point(self, config_path: str) -> importlib.metadata.EntryPoint | None:
        group, name = self._split(config_path)
        if group != CONFIG_GROUP or not name:
            return None
        return plugin_entry_points().get(name)

    def load_config(self, config_path: str) -> ConfigResult:
        ep = self._entry_point(config_path)
        if ep is None:
            raise ConfigLoadError(f"no {ENTRY_POINT_GROUP} entry point provides {config_path!r}")
        config = OmegaConf.create(config_from_signature(load_crappifier(ep)))
        return ConfigResult(
            config=config,
            path=f"{self.scheme()}://{self.path}",
            provider=f"{self.provider} ({ep.value})",
            header={"package": None},
        )

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        path = config_path.strip("/")
        return path == "" or (path == CONFIG_GROUP and bool(plugin_entry_points()))

    def is_config(self, config_path: str) -> bool:
        return self._entry_point(config_path) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        path = config_path.strip("/")
        if path == "":
            wants_groups = results_filter in (None, ObjectType.GROUP)
            return [CONFIG_GROUP] if wants_groups and self.is_group(CONFIG_GROUP) else []
        if path == CONFIG_GROUP and results_filter in (None, ObjectType.CONFIG):
            return sorted(plugin_entry_points())
        return []


class CrappifierSearchPathPlugin(SearchPathPlugin):
    """Append :class:`CrappifierPluginSource` to Hydra's search path, after the application's configs.

    Appending (not prepending) keeps ``conf/crappifier/*.yaml`` ahead of a plugin with the same name.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="psr-crappifier-plugins", path=f"{SCHEME}://psr")
