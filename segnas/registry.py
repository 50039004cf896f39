"""A registry of classes by name, filled by a class decorator as modules are imported; the
built-in modules are imported on first lookup (spaces, strategies), then the plugins.

A plugin is a module outside segnas that registers search methods (``@strategy``) or spaces
(``@register_space``) when imported: an installed package names it under the entry-point group
``segnas.plugins``, or ``SEGNAS_PLUGINS`` lists modules on the Python path (comma-separated). A
plugin that fails to import, or whose class fails the registry's checks, is left out with a
one-line warning naming it; the rest of segnas works without it."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import sys
import warnings
from typing import Callable, Generic, TypeVar

from segnas.errors import SegnasError, SegnasWarning

C = TypeVar("C", bound=type)

#: The entry-point group of installed plugins: each entry names a module to import.
PLUGIN_GROUP = "segnas.plugins"
#: Environment variable of plugin modules to import besides the installed ones (comma-separated).
PLUGIN_ENV = "SEGNAS_PLUGINS"

#: Plugins imported (or tried) in this process, each with what went wrong (None: loaded).
PLUGINS: dict[str, str | None] = {}
_plugins_loaded = False
#: Every registry, so that a plugin that fails half-way leaves none of the classes it registered.
_REGISTRIES: list["Registry"] = []
#: Registries kept as plain name -> function tables (the proxies), rolled back alike.
_TABLES: list[dict] = []
#: ``PID:plugins`` of a process that has warned of a failed plugin, for the workers it starts.
_WARNED_ENV = "SEGNAS_PLUGINS_WARNED"


def load_plugins() -> None:
    """Import every plugin once (the installed entry points, then ``SEGNAS_PLUGINS``; a module named
    by both, once); one that fails is left out, none of the classes its import registered kept, with
    one warning naming it and why (in the command's process, not again in the workers it starts)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    sources: dict[str, tuple[str, Callable[[], object]]] = {}
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        sources.setdefault(ep.value.split(":")[0].strip(), (f"{ep.value} (entry point {ep.name!r} of {PLUGIN_GROUP})",
                                                            ep.load))
    for module in (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(",")):
        if module:
            sources.setdefault(module, (f"{module} ({PLUGIN_ENV})",
                                        lambda module=module: importlib.import_module(module)))
    warned_by_parent = os.environ.get(_WARNED_ENV) == f"{os.getppid()}:{os.environ.get(PLUGIN_ENV, '')}"
    for where, load in sources.values():
        before = {id(entry) for table in [r.classes for r in _REGISTRIES] + _TABLES for entry in table.values()}
        try:
            load()
            PLUGINS[where] = None
        except Exception as exc:  # (a plugin's own error of any kind: it must not stop segnas)
            tables = [registry.classes for registry in _REGISTRIES] + _TABLES  # (with those its import made)
            for table in tables:  # what its import registered before the failure (segnas's own aside),
                for name, entry in list(table.items()):  # its modules imported anew by a later plugin
                    module = getattr(entry, "__module__", "") or ""
                    if id(entry) not in before and not module.startswith("segnas."):
                        del table[name]
                        sys.modules.pop(module, None)
            PLUGINS[where] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            if not warned_by_parent:
                warnings.warn(SegnasWarning(f"segnas plugin {where} not loaded: {PLUGINS[where]}"), stacklevel=2)
    if any(PLUGINS.values()):  # (the workers this process starts, with the same plugins, need not say it again)
        os.environ[_WARNED_ENV] = f"{os.getpid()}:{os.environ.get(PLUGIN_ENV, '')}"


def plugin_table(table: dict[str, Callable]) -> dict[str, Callable]:
    """Have ``table`` (name -> a registered function) rolled back as registries are when a plugin
    that added to it fails to load; returns it."""
    _TABLES.append(table)
    return table


def plugin_hint() -> str:
    """What an error about an unknown name adds: the plugins that failed to load, or how to load one."""
    failed = [f"{where}: {why}" for where, why in PLUGINS.items() if why]
    return (f"not loaded: {'; '.join(failed)}" if failed
            else f"a plugin's: install its package, or name its module in {PLUGIN_ENV}")


def qualified(cls: type) -> str:
    """``module.Class``: where a class is defined."""
    return f"{cls.__module__}.{cls.__qualname__}"


#: What a registered name is made of (it names folders, settings sections and commands).
NAME = re.compile(r"[a-z][a-z0-9_]*")

#: The kinds of attribute whose overrides must keep their kind and call signature.
_KINDS = {classmethod: "class method", staticmethod: "static method", property: "property"}


def _kind(attr: object) -> str | None:
    return "method" if inspect.isfunction(attr) else _KINDS.get(type(attr))


def overrides_fit(cls: type, base: type) -> list[str]:
    """The attributes ``cls`` overrides unlike their definition in ``base`` (or a class between
    them): another kind (a method, class method, static method, property), or a signature that
    cannot take the arguments the definition is called with (its required parameters by position,
    the others by name); each as ``Owner.name(params)`` or ``Owner.name (a kind)``."""
    wrong = []
    for name, attr in vars(cls).items():
        if name.startswith("_") or _kind(attr) is None:
            continue
        owner = next((k for k in cls.__mro__[1:] if issubclass(k, base) and name in vars(k)), None)
        if owner is None or _kind(vars(owner)[name]) is None:
            continue
        defined = vars(owner)[name]
        if _kind(defined) != _kind(attr):
            wrong.append(f"{owner.__name__}.{name} (a {_kind(defined)}, not a {_kind(attr)})")
            continue
        if isinstance(defined, property):
            continue
        defined, attr = getattr(defined, "__func__", defined), getattr(attr, "__func__", attr)
        params = list(inspect.signature(defined).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in positional if p.default is p.empty]
        by_name = [p for p in params if p not in required and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        try:
            inspect.signature(attr).bind(*range(len(required)), **{p.name: 0 for p in by_name})
        except TypeError:
            wrong.append(f"{owner.__name__}.{name}({', '.join(p.name for p in params)})")
    return wrong


class Registry(Generic[C]):
    """``field`` is the setting that names a member (in errors), ``what`` the kind (``search space``);
    ``check(cls, name)``: more checks of a class (SegnasError), run when it registers."""

    def __init__(self, field: str, what: str, base: type, builtin_modules: tuple[str, ...],
                 check: Callable[[C, str], None] | None = None) -> None:
        self.field, self.what, self.base, self.builtin_modules = field, what, base, builtin_modules
        self.check = check
        self.classes: dict[str, C] = {}
        self._builtins_imported = False
        _REGISTRIES.append(self)

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator: make a subclass of ``base`` available as ``name`` (sets ``cls.name``).
        A class that is abstract, overrides a method of ``base`` with a signature it is not called
        with, fails ``check``, or takes a name already taken or not of ``NAME`` is refused
        (SegnasError naming it)."""

        def add(cls: C) -> C:
            where = f"{self.what} {name!r} ({qualified(cls)})"
            if not isinstance(cls, type) or not issubclass(cls, self.base):
                raise SegnasError(f"{where}: a registered {self.what} must subclass {self.base.__name__}")
            if not NAME.fullmatch(name):
                raise SegnasError(f"{where}: a {self.what}'s name is lower-case letters, digits and '_' (it names "
                                  "folders, settings and commands)")
            if not cls.__module__.startswith("segnas."):
                self._import_builtins()  # (a plugin's class meets the built-in names first)
            taken = self.classes.get(name)
            if taken is not None and qualified(taken) != qualified(cls):
                raise SegnasError(f"{self.what} {name!r} is registered twice: by {qualified(taken)} and by "
                                  f"{qualified(cls)}")
            if inspect.isabstract(cls):
                missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
                raise SegnasError(f"{where}: does not define {missing}, which every {self.what} has")
            wrong = overrides_fit(cls, self.base)
            if wrong:
                raise SegnasError(f"{where}: overrides {', '.join(wrong)} unlike the original (another kind, or a "
                                  "signature that cannot take its arguments)")
            if self.check is not None:
                try:
                    self.check(cls, name)
                except SegnasError as exc:
                    raise SegnasError(f"{where}: {exc}") from None
            cls.name = name
            self.classes[name] = cls
            return cls

        return add

    def _import_builtins(self) -> None:
        if not self._builtins_imported:
            self._builtins_imported = True  # (first: a built-in module may look names up as it is imported)
            try:
                for module in self.builtin_modules:
                    importlib.import_module(module)
            except BaseException:
                self._builtins_imported = False  # (tried again, and failing again, at the next lookup)
                raise

    def names(self) -> list[str]:
        """Every registered name: the built-in ones, then the plugins'."""
        self._import_builtins()
        load_plugins()
        return sorted(self.classes)

    def get(self, name: str) -> C:
        known = self.names()
        if name not in self.classes:
            raise SegnasError(f"{self.field}: unknown {self.what} {name!r} (known: {', '.join(known)}; "
                              f"{plugin_hint()})")
        return self.classes[name]
