"""Transfer protocols and batched simulators.

Public names:

- :func:`pretrain`, :func:`scratch`, :func:`finetune`, :func:`linear_transfer`, :func:`teacher_risk`
  -- the protocols of paper 1 on batches of deep linear networks
- :func:`simulate_fate`, :data:`PROTOCOLS` -- B cells x instances of paper 1's experiment in one call;
  :func:`resolve_device` -- a device name checked to exist here
- :func:`freeze_first_k`, :func:`incremental_defrost`, :func:`linear_probe_transfer`, :func:`lp_ft`,
  :func:`transfer_net`, :class:`TargetData`, :class:`TransferResult` -- model-agnostic protocols on any
  BlockNet (:mod:`transferlab.protocols.transfer`; its ``scratch`` and ``finetune`` are reached through that
  module, the names here being paper 1's)
- :func:`linear_probe`, :class:`LinearProbe` -- batched ridge / multinomial logistic probes on frozen features
"""

from transferlab.protocols.fate import (
    PROTOCOLS,
    finetune,
    linear_transfer,
    pretrain,
    resolve_device,
    scratch,
    simulate_fate,
    teacher_risk,
)
from transferlab.protocols._probe import LinearProbe, linear_probe
from transferlab.protocols.transfer import (
    TargetData,
    TransferResult,
    freeze_first_k,
    incremental_defrost,
    linear_probe_transfer,
    lp_ft,
    transfer_net,
)

__all__ = [
    "PROTOCOLS", "LinearProbe", "TargetData", "TransferResult", "finetune", "freeze_first_k", "incremental_defrost",
    "linear_probe", "linear_probe_transfer", "linear_transfer", "lp_ft", "pretrain", "resolve_device", "scratch",
    "simulate_fate", "teacher_risk", "transfer_net",
]
