"""Transfer protocols and batched simulators.

Public names:

- :func:`pretrain`, :func:`scratch`, :func:`finetune`, :func:`linear_transfer`, :func:`teacher_risk`
  -- the protocols of paper 1 on batches of deep linear networks
- :func:`simulate_fate`, :data:`PROTOCOLS` -- B cells x instances of paper 1's experiment in one call
"""

from transferlab.protocols.fate import (
    PROTOCOLS,
    finetune,
    linear_transfer,
    pretrain,
    scratch,
    simulate_fate,
    teacher_risk,
)

__all__ = ["PROTOCOLS", "finetune", "linear_transfer", "pretrain", "scratch", "simulate_fate", "teacher_risk"]
