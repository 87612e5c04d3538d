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

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._factories[name] = fn
            return fn

        return deco

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        if name not in self._factories:
            raise LeansegError(f"Unknown {self.kind} '{name}'; choose one of {self.names()}.")
        return self._factories[name](*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories


MODELS: Registry[Any] = Registry("model")
