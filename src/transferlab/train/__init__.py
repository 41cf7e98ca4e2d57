"""Batched trainers.

Public names:

- :class:`LeastSquaresObjective` -- population or empirical least squares of the end-to-end predictor
- :func:`train_gd`, :class:`GDSettings`, :class:`GDResult` -- full-batch GD for deep linear nets
- :func:`fit`, :func:`evaluate`, :class:`TrainSettings`, :class:`TrainResult` -- minibatch SGD/Adam for any BlockNet
- :func:`fit_lm`, :func:`lm_loss`, :class:`LMSettings`, :class:`LMResult`, :func:`lr_at`, :func:`kaplan_lr` --
  next-token training of batched transformers, warm-up + cosine Adam, early-stopped on validation loss
"""

from transferlab.train.gd import GDResult, GDSettings, train_gd
from transferlab.train.lm import LMResult, LMSettings, fit_lm, kaplan_lr, lm_loss, lr_at
from transferlab.train.loop import TrainResult, TrainSettings, evaluate, fit
from transferlab.train.objectives import LeastSquaresObjective

__all__ = [
    "GDResult", "GDSettings", "LeastSquaresObjective", "TrainResult", "TrainSettings", "evaluate", "fit", "train_gd",
    "LMResult", "LMSettings", "fit_lm", "kaplan_lr", "lm_loss", "lr_at",
]
