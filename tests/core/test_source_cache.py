"""The on-disk source cache: two processes that miss the same network at once train it once (the second waits
on the lock and loads the first one's files). Without the lock both would train: each checks the cache during
the other's 1.5-second training."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

WORKER = textwrap.dedent("""
    import json, sys, time
    import torch
    from transferlab.experiments._source_cache import load_or_train

    def train():
        with open(sys.argv[1], "a") as log:
            log.write("trained\\n")
        time.sleep(1.5)
        return {"w": torch.arange(3.0)}, {"accuracy": 0.5}

    state, facts = load_or_train("k" * 64, train)
    print(json.dumps({"w": state["w"].tolist(), **facts}))
""")


def test_two_processes_missing_at_once_train_once(tmp_path: Path) -> None:
    env = {**os.environ, "TRANSFERLAB_CACHE": str(tmp_path / "cache")}
    log = tmp_path / "trainings.log"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(log)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    assert log.read_text().splitlines() == ["trained"]
    expected = '{"w": [0.0, 1.0, 2.0], "accuracy": 0.5}'
    assert [out.strip() for out, _ in outputs] == [expected, expected]
    assert sorted(p.name for p in (tmp_path / "cache" / "sources").iterdir()) == [
        "k" * 64 + ".json", "k" * 64 + ".lock", "k" * 64 + ".pt"]
