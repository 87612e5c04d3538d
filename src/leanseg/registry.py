"""Name -> factory registries (models; later policies and search controllers), as in timm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from leanseg.errors import LeansegError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._settings: dict[str, type] = {}

    def register(self, name: str, settings: type | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register a factory under ``name``; ``settings`` (a frozen dataclass) types its own options (``model.extra``)."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._factories[name] = fn
            if settings is not None:
                self._settings[name] = settings
            return fn

        return deco

    def settings(self, name: str, values: dict[str, Any], where: str) -> Any:
        """``values`` as ``name``'s typed settings (defaults filled in); an unknown key or a wrong type is refused
        with the valid keys. A factory registered without settings takes no options."""
        from leanseg.config import build_section

        if name not in self._factories:
            raise LeansegError(f"Unknown {self.kind} '{name}'; choose one of {self.names()}.")
        cls = self._settings.get(name)
        if cls is None:
            if values:
                raise LeansegError(f"{self.kind} '{name}' takes no options, but {where} holds {sorted(values)}; remove them.")
            return None
        return build_section(cls, values, f"{where} (of {self.kind} '{name}')")

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        if name not in self._factories:
            raise LeansegError(f"Unknown {self.kind} '{name}'; choose one of {self.names()}.")
        return self._factories[name](*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories


MODELS: Registry[Any] = Registry("model")
