"""A registry of classes by name, filled by a class decorator as modules are imported; the
built-in modules are imported on first lookup (spaces, strategies)."""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

from segnas.errors import SegnasError

C = TypeVar("C", bound=type)


class Registry(Generic[C]):
    """``field`` is the setting that names a member (in errors), ``what`` the kind (``search space``)."""

    def __init__(self, field: str, what: str, base: type, builtin_modules: tuple[str, ...]) -> None:
        self.field, self.what, self.base, self.builtin_modules = field, what, base, builtin_modules
        self.classes: dict[str, C] = {}

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator: make a subclass of ``base`` available as ``name`` (sets ``cls.name``)."""

        def add(cls: C) -> C:
            if not issubclass(cls, self.base):
                raise TypeError(f"{cls.__name__}: a registered {self.what} must subclass {self.base.__name__}")
            if name in self.classes and self.classes[name] is not cls:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            cls.name = name
            self.classes[name] = cls
            return cls

        return add

    def names(self) -> list[str]:
        for module in self.builtin_modules:
            importlib.import_module(module)
        return sorted(self.classes)

    def get(self, name: str) -> C:
        known = self.names()
        if name not in self.classes:
            raise SegnasError(f"{self.field}: unknown {self.what} {name!r} (known: {', '.join(known)})")
        return self.classes[name]
