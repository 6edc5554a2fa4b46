"""The sweep file: base configs, fixed overrides, a grid (or named runs), a search space, seeds, the study's settings.

name: quickstart_lr
config: configs/quickstart.yaml          # one file or a list, stacked like --config
overrides: {trainer.max_epochs: 2}       # for every trial
grid: {data.batch_size: [64, 128]}       # every point once (or runs: {name: {key: value}})
search:                                  # sampled: float/int (log, step) or categorical
  model.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
seeds: [0, 1, 2]                         # every configuration repeated over these seeds
n_trials: 30                             # configurations to try (a grid alone: its size)
sampler: tpe                             # tpe | random | grid
pruner: median                           # median | hyperband | none
metric: val/acc
direction: maximize
test: best                               # best: only the winner is tested; every: each run is
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_cnn.errors import UserError

KEYS = {"name", "config", "overrides", "runs", "grid", "search", "seeds", "n_trials", "sampler", "pruner", "metric"}
KEYS |= {"direction", "test"}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
PARAMETER_TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class SearchParameter:
    """One sampled option: a float or int range (``log``, ``step``) or categorical ``choices``."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def first_value(self) -> Any:  # noqa: ANN401 (any option's value)
        """A value inside the range (to check that the CLI accepts the option)."""
        if self.type == "categorical":
            return self.choices[0]
        return int(self.low) if self.type == "int" else self.low


@dataclass
class SweepSpec:
    """A parsed, checked sweep file. ``configurations`` are named override sets (the grid, or listed runs)."""

    name: str
    configs: list[str]
    overrides: dict[str, Any]
    configurations: dict[str, dict[str, Any]]
    search: dict[str, SearchParameter] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    n_trials: int = 0
    sampler: str = "grid"
    pruner: str = "none"
    metric: str = "val/acc"
    direction: str = "maximize"
    test: str = "best"

    @property
    def option_keys(self) -> dict[str, Any]:
        """Every option the sweep sets, with one value each (the first seen)."""
        keys: dict[str, Any] = dict(self.overrides)
        for overrides in self.configurations.values():
            for key, value in overrides.items():
                keys.setdefault(key, value)
        for key, parameter in self.search.items():
            keys.setdefault(key, parameter.first_value())
        return keys


def format_value(value: object) -> str:
    """A value as jsonargparse reads it from the command line (YAML)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def run_name(overrides: dict[str, object]) -> str:
    """The folder name of a grid point: ``batch_size=10,lr=0.05`` (``default`` without overrides)."""
    if not overrides:
        return "default"
    parts = [f"{key.rsplit('.', 1)[-1]}={format_value(value)}" for key, value in overrides.items()]
    return ",".join(parts).replace("/", "_").replace(" ", "")


def _parameter(path: Path, key: str, spec: object) -> SearchParameter:
    where = f"sweep file {path}: search.{key}"
    if not isinstance(spec, dict) or spec.get("type") not in PARAMETER_TYPES:
        raise UserError(
            f"{where} needs a type of {', '.join(PARAMETER_TYPES)} (e.g. {{type: float, low: 0.001, high: 0.1}})"
        )
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise UserError(f"{where} has unknown keys {sorted(unknown)}; use type, low, high, log, step or choices")
    if spec["type"] == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where} is categorical without choices; add 'choices: [a, b]'")
        return SearchParameter(key, "categorical", choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(bound, (int, float)) and not isinstance(bound, bool) for bound in (low, high)):
        raise UserError(f"{where} needs numbers 'low' and 'high'")
    if not low < high:
        raise UserError(f"{where} has low {low} >= high {high}; set low below high")
    log, step = bool(spec.get("log", False)), spec.get("step")
    if log and low <= 0:
        raise UserError(f"{where} is a log range from {low}, which includes 0 or less; set low above 0, or log: false")
    if log and step is not None:
        raise UserError(f"{where} sets both log and step, which Optuna cannot combine; keep one")
    if spec["type"] == "int" and not all(float(bound).is_integer() for bound in (low, high)):
        raise UserError(f"{where} is an int range with bounds {low}, {high}; use whole numbers or type: float")
    return SearchParameter(key, spec["type"], float(low), float(high), log, step)


def _configurations(path: Path, spec: dict) -> dict[str, dict[str, Any]]:
    runs = spec.get("runs") or {}
    if not isinstance(runs, dict):
        raise UserError(f"sweep file {path}: 'runs' must map run names to overrides")
    configurations = {str(name): dict(overrides or {}) for name, overrides in runs.items()}
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise UserError(f"sweep file {path}: 'grid' must map options to lists of values")
    values = {key: value if isinstance(value, list) else [value] for key, value in grid.items()}
    empty = [key for key, choices in values.items() if not choices]
    if empty:
        raise UserError(f"sweep file {path}: grid.{empty[0]} lists no values; give at least one, or remove it")
    for point in itertools.product(*values.values()) if values else ():
        overrides = dict(zip(values, point, strict=True))
        configurations[run_name(overrides)] = overrides
    return configurations


def load_sweep(path: Path) -> SweepSpec:
    """Read and check a sweep file; every mistake is one UserError naming the key and the fix."""
    if not path.is_file():
        raise UserError(
            f"sweep file {path} does not exist; pass the path of a sweep YAML such as configs/sweeps/seed000_grid.yaml"
        )
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        reason = str(error).splitlines()[0]
        raise UserError(f"sweep file {path} is not valid YAML ({reason}); fix its syntax") from None
    if not isinstance(spec, dict):
        raise UserError(f"sweep file {path} is not a mapping of keys; see configs/sweeps/seed000_grid.yaml")
    unknown = set(spec) - KEYS
    if unknown:
        raise UserError(f"sweep file {path} has unknown keys {sorted(unknown)}; use {', '.join(sorted(KEYS))}")
    configs = spec.get("config")
    configs = [configs] if isinstance(configs, str) else list(configs or [])
    if not configs:
        raise UserError(f"sweep file {path} names no base config; add 'config: configs/<experiment>.yaml'")
    search = {str(key): _parameter(path, str(key), value) for key, value in (spec.get("search") or {}).items()}
    configurations = _configurations(path, spec)
    if not configurations and not search:
        raise UserError(f"sweep file {path} defines no runs; add a 'grid:' of values, 'runs:', or a 'search:' space")
    sampler = spec.get("sampler", "tpe" if search else "grid")
    if sampler not in SAMPLERS:
        raise UserError(f"sweep file {path}: sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if sampler == "grid" and search:
        raise UserError(f"sweep file {path}: sampler grid cannot sample 'search'; use sampler tpe or random, or a grid")
    pruner = str(spec.get("pruner", "none")).lower()
    if pruner not in PRUNERS:
        raise UserError(f"sweep file {path}: pruner {spec.get('pruner')!r} is not one of {', '.join(PRUNERS)}")
    direction = spec.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise UserError(f"sweep file {path}: direction {direction!r} is not maximize or minimize")
    test = spec.get("test", "best")
    if test not in ("best", "every"):
        raise UserError(f"sweep file {path}: test {test!r} is not best (the winner only) or every (each run)")
    seeds = spec.get("seeds") or []
    if not isinstance(seeds, list) or not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
        raise UserError(f"sweep file {path}: seeds must be a list of integers, such as [0, 1, 2]")
    n_trials = spec.get("n_trials", len(configurations) if sampler == "grid" else 20)
    if not isinstance(n_trials, int) or n_trials < 1 or (sampler == "grid" and n_trials > len(configurations)):
        limit = f" at most the grid's {len(configurations)}" if sampler == "grid" else ""
        raise UserError(f"sweep file {path}: n_trials {n_trials!r} must be a positive integer{limit}")
    metric = str(spec.get("metric", "val/acc"))
    return SweepSpec(
        name=str(spec.get("name") or path.stem),
        configs=configs,
        overrides=dict(spec.get("overrides") or {}),
        configurations=configurations,
        search=search,
        seeds=list(dict.fromkeys(seeds)),
        n_trials=n_trials,
        sampler=sampler,
        pruner=pruner,
        metric=metric,
        direction=direction,
        test=test,
    )


def is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
