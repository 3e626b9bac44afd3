"""The scheduler: queued studies -> Optuna trials -> Ray tasks -> results back into Optuna."""

from service.scheduler.core import Scheduler

__all__ = ["Scheduler"]
