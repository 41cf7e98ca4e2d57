"""Experiment kinds: one module per paper, all behind the :class:`Experiment` interface."""

from transferlab.experiments.base import Cell, Experiment, ExperimentConfig, Results, ResultTable
from transferlab.experiments.registry import available_experiments, get_experiment, register

__all__ = [
    "Cell",
    "Experiment",
    "ExperimentConfig",
    "ResultTable",
    "Results",
    "available_experiments",
    "get_experiment",
    "register",
]
