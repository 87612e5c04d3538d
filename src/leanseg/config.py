"""Experiment configuration: frozen dataclasses per component, composed into one config.

Settings are values, not subclasses (DESIGN.md, example 1). A config round-trips through YAML and
takes dotted overrides from the command line (``--set train.lr=0.003``), the way Hydra/nnU-Net
plans do. ``None`` in the data section means "choose from the dataset fingerprint".
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leanseg.errors import LeansegError


@dataclass(frozen=True)
class DataConfig:
    """Preprocessing and patch sampling. ``None`` values are filled in from the fingerprint."""

    target_spacing: tuple[float, float, float] | None = None  # mm, in RAS axis order
    patch_size: tuple[int, int, int] | None = None  # voxels
    normalization: str = "auto"  # auto (each channel by its name, as nnU-Net) | one scheme for all | schemes per channel, comma-separated
    orientation: str = "RAS"
    crop_foreground: bool = True
    foreground_oversample: float = 0.33  # share of patches centred on a foreground voxel
    num_folds: int = 5
    fold: int | str = 0  # validation fold, or "all": train on every case (nnU-Net's all; validation then sees training cases)
    # nested split: validate on this fold of ``fold``'s training cases (split again into num_folds), so that a search
    # selects on cases disjoint from the fold that reports its winner; None: validate on ``fold`` itself
    inner_fold: int | None = None
    split_seed: int = 12345


@dataclass(frozen=True)
class AugmentConfig:
    """One probability per augmentation (searched by ``leanseg search strategy``), then magnitudes."""

    flip: float = 0.5  # per axis
    rotate_scale: float = 0.2
    noise: float = 0.15
    smooth: float = 0.1
    sharpen: float = 0.1
    contrast: float = 0.15
    shift: float = 0.15
    rotate_degrees: float = 15.0
    scale_range: float = 0.15
    noise_std: float = 0.1
    shift_offset: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. ``features``/``strides`` ``None`` are planned from the patch size and spacing."""

    name: str = "resunet"
    features: tuple[int, ...] | None = None
    strides: tuple[tuple[int, int, int], ...] | None = None
    kernel_size: int = 3
    blocks_per_stage: int = 1
    deep_supervision: bool = True
    base_features: int = 16
    max_features: int = 256
    extra: dict[str, Any] = field(default_factory=dict)  # the family's own settings, typed by its registered dataclass


DEFAULT_ITERATIONS = 2000  # training length with neither train.iterations nor a budget set


@dataclass(frozen=True)
class TrainConfig:
    iterations: int | None = None  # None: DEFAULT_ITERATIONS, or no limit where budget_minutes is set (the clock ends training)
    batch_size: int = 2
    optimizer: str = "adamw"  # adamw | adam | sgd (Nesterov, nnU-Net's); see docs/benchmarks/base_recipe.md
    lr: float = 1e-3
    momentum: float = 0.99  # sgd only
    weight_decay: float = 1e-2
    schedule: str = "poly"  # poly | cosine | constant
    budget_minutes: float | None = None  # wall-clock budget; the schedule follows it when set
    val_every: int = 200
    val_max_cases: int | None = None
    checkpoint_every: int = 200
    seed: int = 0
    num_threads: int = 2
    num_workers: int = 1
    bf16: bool | None = None  # bf16 autocast on CPU; None: on where the CPU has native bf16 (2x faster steps here)
    init_checkpoint: str | None = None  # fine-tune from these weights
    device: str = "auto"  # auto (CUDA where torch sees one) | cpu | cuda | cuda:N
    amp: bool = True  # on CUDA: float16 autocast with gradient scaling (CPU steps follow ``bf16``)
    compile: bool | None = (
        None  # torch.compile + channels-last; None: where this CPU measured faster, for runs long enough (leanseg.fastpath)
    )

    @property
    def iteration_limit(self) -> int | None:
        """The iterations that end training: ``iterations``, or with it unset, none under a budget (the clock ends
        it) and :data:`DEFAULT_ITERATIONS` without one."""
        if self.iterations is not None:
            return self.iterations
        return None if self.budget_minutes else DEFAULT_ITERATIONS


@dataclass(frozen=True)
class InferenceConfig:
    mode: str = "auto"  # auto | whole | sliding
    overlap: float = 0.5
    sw_batch_size: int = 2
    backend: str = "eager"  # eager | bf16 | onnx
    tta: bool = False  # test-time mirroring over all 8 axis flips (costs about 8x network time)
    num_threads: int = 2
    max_memory_gb: float | None = None  # refuse volumes whose estimate exceeds this (None: memory available now)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (torch back-ends; ONNX Runtime runs on the CPU)
    compile: bool | None = None  # torch.compile + channels-last for the torch back-ends; None: off (measured no faster, leanseg.fastpath)


@dataclass(frozen=True)
class AutoPathConfig:
    """Per-image block dropping (AutoPath): the policy network, its REINFORCE training, the heuristic sweep."""

    tau: float = 50.0  # penalty of a wrongly predicted voxel: the accuracy-versus-compute dial
    policy_input: str = "image"  # what the policy sees: "image" or "stem" (the segmentation network's stem features)
    policy_size: tuple[int, int, int] = (32, 32, 32)  # the policy sees its input resized to this
    policy_features: tuple[int, ...] = (8, 16, 32)
    bound: float = 0.05  # drop probabilities are kept in [bound, 1 - bound]
    cost: str = "blocks"  # what the reward counts as compute: "blocks" (the paper) or "macs" (each block's multiply-accumulates)
    reward: str = "voxel"  # accuracy term: "voxel" (share of voxels right, background included) or "dice" (mean foreground Dice)
    normalise: bool = False  # divide each image's advantages by the spread of its sampled rewards
    entropy_weight: float = 0.01
    lr: float = 1e-3
    images_per_step: int = 4
    samples_per_image: int = 4  # sampled paths per image and update, run in one batch with the greedy path
    stage_steps: int = 40  # curriculum: updates per stage; stage c decides only the last c blocks
    steps: int = 800  # policy updates in all, curriculum included
    budget_minutes: float | None = None  # stop earlier when this wall-clock budget is spent (all restarts together)
    restarts: int = 1  # train from this many seeds, keep the policy with the best greedy reward on the training cases
    random_repeats: int = 5  # DropRandomN draws per dropping level in the sweep
    seed: int = 0
    num_threads: int = 2


@dataclass(frozen=True)
class StrategySearchConfig:
    """``leanseg search strategy`` (Yang et al. 2019): each trial is a training run of the base config."""

    controller: str = "ppo"  # ppo | hill | hill-continuous | random | tpe
    trials: int = 8  # trials in all, failed ones included
    parallel: int = 1  # trials at once
    ray_address: str | None = None  # run trials on this Ray cluster ("local": start one here)
    seed: int = 0
    threads_per_trial: int | None = None  # None: the CPU count divided by ``parallel``
    in_process: bool = False  # run trials one at a time in the search's process: no start-up per trial (a trial's error stops the search)


@dataclass(frozen=True)
class ArchitectureSearchConfig:
    """``leanseg search architecture`` (Bae et al. 2019 after ENAS); see :func:`leanseg.search.nas.search_architecture`."""

    controller: str = "enas"  # enas | random
    loop: str = "two_phase"  # two_phase (ENAS: train the shared weights, then score fresh children with them fixed) | interleaved
    episodes: int = 4
    children: int = 20  # per episode, training the shared weights (the paper: 20)
    scored_children: int = 20  # two_phase: per episode, fresh children scored with the weights fixed and told to the controller
    child_iterations: int = 20  # steps of the shared weights per child
    val_cases: int | None = 10  # validation cases that score each child (None: all)
    memory_limit_gb: float | None = None  # never sample a child whose estimate exceeds this (None: half the free memory)
    num_stages: int = 4
    skips: str = "cross"  # cross: a long skip from any encoder stage, resampled (the paper's) | same_level
    seed: int = 0
    derive_samples: int = 10  # ENAS derivation: samples scored beside the most probable architecture
    momentum: float | None = 0.9  # SGD momentum of the shared weights (None: train.momentum; 0.99 collapsed them)
    final_iterations: int = 0  # then train the chosen child alone from the shared weights (0: as they are)
    final_momentum: float | None = None  # SGD momentum of that final training (None: train.momentum)
    final_schedule: str = "restart"  # restart | continue (the decay counts the search's iterations first)
    start_prob: float | None = None  # ENAS: initial policy centred on the first child (None or 0: near uniform, the paper's)
    controller_lr: float = 0.001  # ENAS: the controller's Adam rate (the paper's; 0.01 with start_prob 0.7 was the earlier default)
    warmup_children: int = 0  # ENAS: uniformly drawn children first, not told to the controller


@dataclass(frozen=True)
class SearchConfig:
    strategy: StrategySearchConfig = field(default_factory=StrategySearchConfig)
    architecture: ArchitectureSearchConfig = field(default_factory=ArchitectureSearchConfig)


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    autopath: AutoPathConfig = field(default_factory=AutoPathConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        return _build(cls, d, "config")

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> ExperimentConfig:
        """Return a copy with dotted overrides applied, e.g. ``["train.lr=0.003"]``."""
        d = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else map(_split_override, overrides)
        for key, value in items:
            *parents, leaf = key.split(".")
            node = d
            for p in parents:
                if not isinstance(node.get(p), dict):
                    raise LeansegError(f"Unknown config key '{key}': '{p}' is not a section; see `leanseg train --help`.")
                node = node[p]
            if leaf not in node and not (parents and parents[-1] == "extra"):
                raise LeansegError(f"Unknown config key '{key}'; valid keys in '{'.'.join(parents)}' are {sorted(node)}.")
            node[leaf] = value
        return ExperimentConfig.from_dict(d)

    def save(self, path: Path) -> None:
        from leanseg.utils import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> ExperimentConfig:
        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise LeansegError(f"Cannot read config {path}: {e}; fix the YAML or pass another --config.") from e
        return cls.from_dict(d)


def _split_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise LeansegError(f"Override '{item}' must look like section.key=value, e.g. train.lr=0.003.")
    key, raw = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        problem = str(e).splitlines()[0]
        raise LeansegError(
            f"Override '{item}': its value is not valid YAML ({problem}); write it as in a config file, e.g. train.lr=0.003."
        ) from e


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type (tuples, optionals, nested dataclasses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for a in args[:-1]:  # the first type the value fits; the last one's error where none does
            try:
                return _coerce(a, value, where)
            except LeansegError:
                pass
        return _coerce(args[-1], value, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise LeansegError(f"Config value {where}={value!r} must be a list.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise LeansegError(f"Config value {where}={value!r} must have {len(args)} entries.")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if origin is dict or tp is dict:
        return dict(value or {})
    if tp is float:
        number = _number(value)
        if number is None:
            raise LeansegError(f"Config value {where}={value!r} must be a number.")
        if not math.isfinite(number):
            raise LeansegError(f"Config value {where}={value!r} must be a finite number; fix the config or the --set.")
        return number
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise LeansegError(f"Config value {where}={value!r} must be of type {tp.__name__}.")
    return value


# Every numeric setting's valid values, in one place: checked whenever a config is built (YAML, --set, a checkpoint's),
# so a bad number is one sentence naming the key and its range. Tuples are checked entry by entry; None passes where
# the field allows it. Floats must be finite everywhere. "odd": an odd number >= 1 (a kernel that keeps the size).
PROBABILITY = "in [0, 1]"
RANGES: dict[str, dict[str, str]] = {
    "DataConfig": {
        "target_spacing": "> 0",
        "patch_size": ">= 1",
        "foreground_oversample": PROBABILITY,
        "num_folds": ">= 2",
        "fold": ">= 0",
        "inner_fold": ">= 0",
        "split_seed": ">= 0",
        "orientation": "axcodes",
    },
    "AugmentConfig": {
        **dict.fromkeys(("flip", "rotate_scale", "noise", "smooth", "sharpen", "contrast", "shift"), PROBABILITY),
        "rotate_degrees": "in [0, 180]",
        "scale_range": "in [0, 1)",
        "noise_std": ">= 0",
        "shift_offset": ">= 0",
    },
    "ModelConfig": {
        "features": ">= 1",
        "strides": ">= 1",
        "kernel_size": "odd",
        "blocks_per_stage": ">= 1",
        "base_features": ">= 1",
        "max_features": ">= 1",
    },
    "TrainConfig": {
        "iterations": ">= 1",
        "batch_size": ">= 1",
        "lr": "> 0",
        "momentum": "in [0, 1)",
        "weight_decay": ">= 0",
        "budget_minutes": "> 0",
        "val_every": ">= 1",
        "val_max_cases": ">= 1",
        "checkpoint_every": ">= 1",
        "seed": ">= 0",
        "num_threads": ">= 1",
        "num_workers": ">= 0",
    },
    "InferenceConfig": {"overlap": "in [0, 1)", "sw_batch_size": ">= 1", "num_threads": ">= 1", "max_memory_gb": "> 0"},
    "AutoPathConfig": {
        "tau": ">= 0",
        "policy_size": ">= 1",
        "policy_features": ">= 1",
        "bound": "in (0, 0.5)",  # 0 would let a drop probability reach 0 or 1, whose log the policy gradient takes
        "entropy_weight": ">= 0",
        "lr": "> 0",
        "budget_minutes": "> 0",
        **dict.fromkeys(
            ("images_per_step", "samples_per_image", "stage_steps", "steps", "restarts", "random_repeats", "num_threads"), ">= 1"
        ),
        "seed": ">= 0",
    },
    "StrategySearchConfig": {"trials": ">= 1", "parallel": ">= 1", "seed": ">= 0", "threads_per_trial": ">= 1"},
    "ArchitectureSearchConfig": {
        **dict.fromkeys(("episodes", "children", "child_iterations", "val_cases", "num_stages"), ">= 1"),
        "scored_children": ">= 0",  # the interleaved loop scores none; the two-phase loop refuses 0 where it runs
        "memory_limit_gb": "> 0",
        **dict.fromkeys(("seed", "derive_samples", "final_iterations", "warmup_children"), ">= 0"),
        **dict.fromkeys(("momentum", "final_momentum", "start_prob"), "in [0, 1)"),
        "controller_lr": "> 0",
    },
}
_AXES = ("LR", "PA", "IS")


def _in_range(rule: str, v: Any) -> bool:
    if rule == "axcodes":  # one letter of each pair, in any order (MONAI's Orientation)
        return isinstance(v, str) and sorted(next((i for i, a in enumerate(_AXES) if c in a), -1) for c in v) == [0, 1, 2]
    if rule == "odd":
        return v >= 1 and v % 2 == 1
    if rule.startswith("in "):
        lo, hi = (float(x) for x in rule[4:-1].split(","))
        return (lo <= v if rule[3] == "[" else lo < v) and (v <= hi if rule[-1] == "]" else v < hi)
    op, bound = rule.split()
    return v >= float(bound) if op == ">=" else v > float(bound)


def _check_range(cls: Any, key: str, value: Any, where: str) -> None:
    """Refuse a value outside the field's range in :data:`RANGES`, with the range in the sentence."""
    rule = RANGES.get(cls.__name__, {}).get(key)
    if rule is None or value is None:
        return
    flat = [x for v in (value if isinstance(value, tuple) else (value,)) for x in (v if isinstance(v, tuple) else (v,))]
    for v in flat:
        if isinstance(v, str) and rule != "axcodes":
            continue  # a word setting beside numbers (data.fold "all") is checked where it is used
        if not _in_range(rule, v):
            raise LeansegError(
                f"Config value {where}={value!r} is out of range: it must be {_range_text(rule)}; fix the config or the --set."
            )


def _range_text(rule: str) -> str:
    return {"axcodes": "three axis letters, one of each pair L/R, P/A, I/S (e.g. RAS)", "odd": "an odd whole number >= 1"}.get(rule, rule)


def _number(value: Any) -> float | None:
    """A float from YAML: a number, or a string of one (YAML 1.1 reads ``1e-3`` as a string); None if it is neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def build_section(cls: Any, d: Any, where: str) -> Any:
    """A config dataclass from a mapping: types coerced and checked, an unknown key refused with the valid ones."""
    return _build(cls, d, where)


def _build(cls: Any, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise LeansegError(f"Config section '{where}' must be a mapping, got {d!r}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise LeansegError(f"Unknown config key(s) {sorted(unknown)} in '{where}'; valid keys are {sorted(names)}.")
    values = {}
    for k, v in d.items():
        rule = RANGES.get(cls.__name__, {}).get(k)
        try:
            values[k] = _coerce(hints[k], v, f"{where}.{k}")
        except LeansegError as e:  # a wrong type: say the range too, where the field has one
            raise LeansegError(f"{e}".rstrip(".") + (f" ({_range_text(rule)})." if rule else ".")) from None
        _check_range(cls, k, values[k], f"{where}.{k}")
    return cls(**values)
