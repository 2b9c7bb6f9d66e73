"""The plugin manager: entry points plus built-in backends registered as default plugins.

Plugins load lazily, once, on the first call that needs them. Set
``AGENT_EMBEDDINGS_LOAD_PLUGINS`` to a comma-separated list of entry-point names to load only
those (empty: none) — tests use it so they do not depend on what happens to be installed.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass

import pluggy

from . import hookspecs
from .backends import BUILTIN_BACKENDS
from .errors import PluginError, UnknownBackendError
from .hookspecs import BackendFactory
from .version import DISTRIBUTION, __version__

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "BackendInfo", "get_backend", "get_backends", "pm"]

ENTRY_POINT_GROUP = "agent_embeddings"
# Built-in backends, registered through the same hooks as third-party plugins. Registered
# before entry points so that, for firstresult hooks (called last-registered first), an
# installed plugin can override a built-in answer.
DEFAULT_PLUGINS: tuple[str, ...] = (
    *(b.module for b in BUILTIN_BACKENDS),
    "agent_embeddings.backends.packaged_models",  # resolve_local_model: the weights shipped as a package
)

pm = pluggy.PluginManager("agent_embeddings")
pm.add_hookspecs(hookspecs)

_lock = threading.RLock()
_loaded = False
_backends: dict[str, BackendInfo] | None = None


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend: its prefix, factory and the plugin/distribution providing it."""

    prefix: str
    factory: BackendFactory
    plugin: str
    distribution: str
    version: str

    @property
    def factory_name(self) -> str:
        """Dotted name of the factory, e.g. ``pkg.module.Class.from_model_item``."""
        f = self.factory
        owner = getattr(f, "__self__", None)
        if isinstance(owner, type):  # a classmethod: name the class it is bound to
            return f"{owner.__module__}.{owner.__qualname__}.{f.__name__}"
        return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"


def load_plugins() -> None:
    """Register default plugins and entry-point plugins, once; then check hook names."""
    global _loaded
    with _lock:
        if _loaded:
            return
        for module_name in DEFAULT_PLUGINS:
            if pm.get_plugin(module_name) is None:
                pm.register(importlib.import_module(module_name), name=module_name)
        allow = os.environ.get("AGENT_EMBEDDINGS_LOAD_PLUGINS")
        if allow is None:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        else:
            for name in filter(None, (n.strip() for n in allow.split(","))):
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
        try:
            pm.check_pending()  # a misspelt hook name fails here, not silently
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"invalid plugin: {exc}") from exc
        _loaded = True


def _distributions() -> dict[str, tuple[str, str]]:
    """plugin name -> (distribution, version), for entry-point plugins and built-ins."""
    out: dict[str, tuple[str, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        out[pm.get_name(plugin) or ""] = (dist.project_name, dist.version)
    ours = (DISTRIBUTION, __version__)
    for name in DEFAULT_PLUGINS:
        out[name] = ours
    return out


def _collect() -> dict[str, BackendInfo]:
    load_plugins()
    dists = _distributions()
    found: dict[str, BackendInfo] = {}
    # Each plugin's implementation is called through pluggy (so hook wrappers and tracing run)
    # with its own ``register``, so that a clash can name both plugins.
    for impl in pm.hook.register_embedding_backends.get_hookimpls():
        dist, version = dists.get(impl.plugin_name, ("?", "?"))

        def register(
            prefix: str,
            factory: BackendFactory,
            *,
            _plugin: str = impl.plugin_name,
            _dist: str = dist,
            _version: str = version,
        ) -> None:
            if prefix in found:
                raise PluginError(
                    f"backend prefix {prefix!r} is registered by two plugins: "
                    f"{found[prefix].plugin!r} and {_plugin!r}; uninstall or disable one of them"
                )
            if not callable(factory):
                raise PluginError(f"plugin {_plugin!r} registered a non-callable factory for {prefix!r}")
            found[prefix] = BackendInfo(prefix, factory, _plugin, _dist, _version)

        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        pm.subset_hook_caller("register_embedding_backends", remove_plugins=others)(register=register)
    return found


def get_backends() -> dict[str, BackendInfo]:
    """All registered backends by prefix (computed once)."""
    global _backends
    with _lock:
        if _backends is None:
            _backends = _collect()
        return _backends


def get_backend(prefix: str) -> BackendInfo:
    """The backend owning ``prefix``; unknown prefixes raise an error listing the known ones."""
    backends = get_backends()
    try:
        return backends[prefix]
    except KeyError:
        known = ", ".join(f"{p}:" for p in sorted(backends)) or "none"
        raise UnknownBackendError(
            f"unknown backend prefix '{prefix}:'; known backends: {known} "
            f"(a plugin package adds more through the '{ENTRY_POINT_GROUP}' entry point)"
        ) from None


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, applications embedding their own backend)."""
    global _backends
    with _lock:
        load_plugins()
        try:
            pm.register(plugin, name=name)
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if pm.is_registered(plugin):
                pm.unregister(plugin)
            raise PluginError(f"invalid plugin {name or plugin!r}: {exc}") from exc
        _backends = None


def unregister_plugin(plugin: object) -> None:
    global _backends
    with _lock:
        pm.unregister(plugin)
        _backends = None
