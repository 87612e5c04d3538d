"""Search spaces as data: config keys with ranges, each mapped to [0, 1].

A controller only sees points of the unit cube; the space turns them into config overrides. Adding a
searched value is one entry (YAML or Python), no code::

    - {key: train.lr, low: 1.0e-4, high: 1.0e-2, log: true}
    - {key: augment.noise, low: 0.0, high: 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.errors import LeansegError


@dataclass(frozen=True)
class Param:
    """One searched config value: ``key`` (dotted), range ``[low, high]``, linear or log scale."""

    key: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise LeansegError(f"Search range of {self.key} is empty ({self.low} .. {self.high}); give high > low.")
        if self.log and self.low <= 0:
            raise LeansegError(f"Log-scale range of {self.key} must be positive, got low={self.low}.")

    def value(self, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        return float(min(max(v, self.low), self.high))  # exp(log(high)) may round past high

    def unit(self, v: float) -> float:
        v = min(max(float(v), self.low), self.high)
        if self.log:
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @property
    def dim(self) -> int:
        return len(self.params)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def values(self, unit: Sequence[float]) -> dict[str, float]:
        """Config overrides for a point of the unit cube."""
        if len(unit) != self.dim:
            raise ValueError(f"expected {self.dim} coordinates, got {len(unit)}")
        return {p.key: p.value(u) for p, u in zip(self.params, unit)}

    def unit(self, values: dict[str, float]) -> np.ndarray:
        return np.array([p.unit(values[p.key]) for p in self.params])

    def routine(self, base: Any = None) -> np.ndarray:
        """The paper's "routine" start: every probability (a [0, 1] range) at 0.5, others at the base config's value."""
        base_values = _config_values(base, self.keys) if base is not None else {}
        out = []
        for p in self.params:
            if (p.low, p.high) == (0.0, 1.0) and not p.log:
                out.append(0.5)
            elif p.key in base_values:
                out.append(p.unit(base_values[p.key]))
            else:
                out.append(0.5)
        return np.array(out)

    def check(self, cfg: Any) -> None:
        """Fail early (one sentence) when a key does not exist in the experiment config."""
        cfg.with_overrides({p.key: p.value(0.5) for p in self.params})

    def to_list(self) -> list[dict[str, Any]]:
        return [{"key": p.key, "low": p.low, "high": p.high, "log": p.log} for p in self.params]

    @classmethod
    def from_list(cls, items: Iterable[dict[str, Any]], source: str = "search space") -> SearchSpace:
        params = []
        for i, it in enumerate(items):
            if not isinstance(it, dict) or not {"key", "low", "high"} <= set(it):
                raise LeansegError(f"Entry {i} of {source} needs key, low and high (and optionally log); got {it!r}.")
            params.append(Param(str(it["key"]), float(it["low"]), float(it["high"]), bool(it.get("log", False))))
        if not params:
            raise LeansegError(f"{source} is empty; list at least one {{key, low, high}} entry.")
        return cls(tuple(params))

    @classmethod
    def load(cls, path: Path) -> SearchSpace:
        import yaml

        path = Path(path)
        try:
            items = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise LeansegError(f"Cannot read search space {path}: {e}; fix the YAML or pass another --space.") from e
        if isinstance(items, dict):
            items = items.get("params", items)
        if not isinstance(items, list):
            raise LeansegError(f"{path} must be a list of {{key, low, high, log}} entries (or a mapping with 'params').")
        return cls.from_list(items, str(path))


def _config_values(cfg: Any, keys: list[str]) -> dict[str, float]:
    d = cfg.to_dict()
    out = {}
    for k in keys:
        node: Any = d
        for part in k.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            out[k] = float(node)
    return out


AUGMENTATIONS = ("sharpen", "smooth", "noise", "contrast", "shift", "flip", "rotate_scale")


def strategy_space(lr_low: float = 1e-4, lr_high: float = 1e-2, with_lr: bool = True) -> SearchSpace:
    """Yang et al. 2019's space: the probability of each augmentation and (``with_lr``) the learning rate (log scale)."""
    lr = (Param("train.lr", lr_low, lr_high, log=True),) if with_lr else ()
    return SearchSpace(tuple(Param(f"augment.{a}", 0.0, 1.0) for a in AUGMENTATIONS) + lr)
