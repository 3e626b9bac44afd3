"""Translating a study's request into Optuna's own objects: distributions, sampler, pruner.

Every sampler and pruner is Optuna's; nothing here re-implements them.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from db.engine import engine_options
from service.schemas import Dimension
from service.study_spec import StudySpec

# Optuna's default n_startup_trials (10) would make TPE random search for most of a small
# study; these many random trials first, at most a quarter of the study.
_MAX_STARTUP_TRIALS = 10


def storage_for(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the service's database (Optuna creates its own tables)."""
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url))


def distribution_of(key: str, dim: Dimension, kind: str) -> BaseDistribution:
    """The Optuna distribution of one search-space entry for a value of ``kind``."""
    if dim.choices is not None:
        return CategoricalDistribution(tuple(dim.choices))
    assert dim.low is not None  # guaranteed by Dimension
    assert dim.high is not None
    if kind == "int":
        step = int(dim.step) if dim.step is not None else 1
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log, step=step)
    return FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)


def distributions_of(spec: StudySpec) -> dict[str, BaseDistribution]:
    """Optuna distributions for every searched knob and workload argument (their kinds
    were recorded at submission: no plug-in is asked again)."""
    return {
        key: distribution_of(key, dim, spec.kinds.get(key, "float"))
        for key, dim in spec.search_space.items()
    }


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus ``study.stop()`` when the grid is done: that call only
    works inside ``study.optimize``; the scheduler ends grid studies itself."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None


def build_sampler(request: StudySpec, n_existing_trials: int) -> optuna.samplers.BaseSampler:
    """The study's sampler; its seed is offset by the trials already run, so a sampler
    rebuilt after a restart does not replay the same draws."""
    seed = None if request.seed is None else (request.seed + n_existing_trials) % (2**31)
    startup = max(1, min(_MAX_STARTUP_TRIALS, request.n_trials // 4))
    match request.sampler:
        case "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup)
        case "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        case "qmc":
            return optuna.samplers.QMCSampler(seed=request.seed, scramble=True)
        case "grid":
            grid = {k: dim.grid_values or [] for k, dim in request.search_space.items()}
            return _GridSampler(grid, seed=request.seed)
    raise ValueError(f"unknown sampler {request.sampler!r}")


def build_pruner(request: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner: Optuna's median or Hyperband pruner, or none."""
    match request.pruner:
        case "median":
            startup = max(1, min(5, request.n_trials // 4))
            return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=1)
        case "hyperband":
            return optuna.pruners.HyperbandPruner()
        case "none":
            return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {request.pruner!r}")
