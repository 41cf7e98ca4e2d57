"""Training speed of the character-level transformers (transferlab.nets.transformer + transferlab.train.lm).

1. Throughput at the largest size: ``fit_lm`` on the Python corpus (the standard library's training
   split), context T, batch B windows, a fixed number of steps (no early stopping: one evaluation of T
   validation tokens at the start and the end), timed after two warm-up steps. Reported: training tokens
   per second (B T per step), and two FLOP rates against the float32 matmul ceiling measured in the
   same run (``_ceiling.matmul_ceiling``, 2000 x 2000 torch matmul):
   - "6N+attn": C = 6 N + 6 L T d FLOPs per token (Kaplan et al. 2020; N non-embedding parameters),
     the issue's accounting;
   - "counted": the FLOPs torch's ``FlopCounterMode`` counts in one training step's forward and
     backward (every matmul, the unembedding and the attention's T x T products included), over B T.
2. Batching: I small models as one program (``instances=I``) against I single-instance runs one after
   another, same steps, batch and data; the ratio of their tokens per second (both counted per model).

Run (never beside another benchmark; other agents share the cores):
    flock /tmp/transferlab-bench.lock .venv/bin/python benchmarks/bench_lm.py
    .venv/bin/python benchmarks/bench_lm.py --quick      # seconds: size m, 4 steps
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from transferlab.nets.transformer import TRANSFORMER_SIZES, non_embedding_params, training_flops_per_token, transformer
from transferlab.tasks.text import load_corpus
from transferlab.train.lm import LMSettings, fit_lm
from _ceiling import matmul_ceiling  # benchmarks/_ceiling.py (the script's folder is on sys.path)


def timed_fit(size: str, instances: int, batch: int, context: int, steps: int, train, validation) -> float:
    """Seconds of ``steps`` training steps of a fresh model (after 2 untimed warm-up steps)."""
    net = transformer(size, context=context, instances=instances, generator=torch.Generator().manual_seed(0))
    warm = LMSettings(batch_size=batch, max_steps=2, warmup_steps=1, eval_every=10**6, patience=None,
                      val_tokens=context)
    fit_lm(net, train, validation, warm, generator=torch.Generator().manual_seed(1))
    settings = LMSettings(batch_size=batch, max_steps=steps, warmup_steps=1, eval_every=10**6, patience=None,
                          val_tokens=context)
    start = time.perf_counter()
    fit_lm(net, train, validation, settings, generator=torch.Generator().manual_seed(2))
    return time.perf_counter() - start


def counted_flops_per_token(size: str, batch: int, context: int) -> float:
    """FLOPs of one forward + backward pass counted by torch, per training token."""
    net = transformer(size, context=context, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 256, (1, batch, context + 1), generator=torch.Generator().manual_seed(1))
    counter = FlopCounterMode(display=False)
    with counter:
        logits = net.forward_from(ids[..., :-1], 0)
        F.cross_entropy(logits.flatten(0, 2), ids[..., 1:].flatten()).backward()
    return counter.get_total_flops() / (batch * context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="xl", choices=list(TRANSFORMER_SIZES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--small", default="s", choices=list(TRANSFORMER_SIZES), help="size for the batching test")
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="size m, 4 steps, 2 instances")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.size, args.steps, args.instances = "m", 4, 2
    corpus = load_corpus("python")
    train, validation = corpus.train[:2_000_000], corpus.validation
    T, B = args.context, args.batch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Python corpus, context {T}, batch {B}")

    ceiling = matmul_ceiling(torch.float32)
    seconds = timed_fit(args.size, 1, B, T, args.steps, train, validation)
    tokens_per_s = args.steps * B * T / seconds
    kaplan = training_flops_per_token(args.size, T)
    counted = counted_flops_per_token(args.size, B, T)
    ceiling_after = matmul_ceiling(torch.float32)
    print(f"float32 matmul ceiling: {ceiling:.1f} GFLOP/s before, {ceiling_after:.1f} after the run")
    ceiling = max(ceiling, ceiling_after)
    print(f"size {args.size} (N = {non_embedding_params(args.size):,}): {args.steps} steps in {seconds:.2f} s, "
          f"{tokens_per_s:,.0f} training tokens/s")
    for label, per_token in (("6N+attn", kaplan), ("counted", counted)):
        rate = tokens_per_s * per_token / 1e9
        print(f"  {label:8s} {per_token / 1e6:6.2f} MFLOP/token -> {rate:6.1f} GFLOP/s = "
              f"{100 * rate / ceiling:5.1f} % of the ceiling")

    I, small = args.instances, args.small
    batched = timed_fit(small, I, B, T, args.steps, train, validation)
    single = sum(timed_fit(small, 1, B, T, args.steps, train, validation) for _ in range(I))
    print(f"batching {I} models of size {small} (N = {non_embedding_params(small):,}): one program "
          f"{I * args.steps * B * T / batched:,.0f} tokens/s, one after another {I * args.steps * B * T / single:,.0f} "
          f"tokens/s: ratio {single / batched:.2f}")


if __name__ == "__main__":
    main()
