"""Reaper of the local Ray instance a transferlab driver starts, so that it never outlives the driver.

Run as a script (``python _ray_reaper.py``; it imports nothing from transferlab, so it starts in
milliseconds) by :class:`transferlab.sweep.executors.RayExecutor`, on Linux, just before
``ray.init``, with its stdin a pipe from the driver (its parent). Protocol:

1. The reaper notes the driver's children that exist already -- they are not Ray's -- and then
   writes one byte to stdout; the driver waits for it before it calls ``ray.init``.
2. Every ``POLL_S`` seconds it records each new child of the driver whose command line names Ray
   (gcs_server, raylet, dashboard, log monitor, ...) and every descendant of a recorded process
   (the raylet's agents and workers), each with its start time, so a reused pid is never mistaken
   for it.
3. The driver writes one line once ``ray.init`` has returned; after that no new child of the
   driver is adopted (descendants of recorded processes still are).
4. At end of file on stdin -- the driver closed it after ``ray.shutdown()``, or the driver died,
   even by SIGKILL, which closes the pipe -- it kills every recorded process still alive, then
   exits. Ray fate-shares its top processes with the driver, but the raylet's agents
   (DashboardAgent, RuntimeEnvAgent) otherwise live on after a SIGKILL.

SIGINT, SIGTERM and SIGHUP are ignored: a signal sent to the driver's whole process group must
not end the reaper before the driver is gone.
"""

from __future__ import annotations

import os
import select
import signal
import sys

POLL_S = 0.2


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` (of every thread of it); empty if it is gone."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                found.update(int(child) for child in fh.read().split())
        except OSError:
            continue
    return found


def _start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _names_ray(pid: int) -> bool:
    """Whether the command line of ``pid`` mentions Ray."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"ray" in fh.read().lower()
    except OSError:
        return False


class _Tracker:
    """The Ray processes of one driver, by pid, with their start times."""

    def __init__(self, driver: int):
        self.driver = driver
        self.ignored = _children(driver) | {os.getpid()}
        self.tracked: dict[int, int] = {}
        self.adopting = True

    def _record(self, pid: int) -> None:
        start = _start_time(pid)
        if start is not None:
            self.tracked.setdefault(pid, start)

    def _alive(self) -> list[int]:
        return [pid for pid, start in self.tracked.items() if _start_time(pid) == start]

    def scan(self) -> None:
        """Record new Ray children of the driver (while adopting) and every descendant of a
        recorded process that is still alive."""
        if self.adopting:
            for pid in _children(self.driver) - self.ignored:
                if _names_ray(pid):
                    self._record(pid)
                else:
                    self.ignored.add(pid)
        todo = self._alive()
        while todo:
            for child in _children(todo.pop()):
                if child not in self.tracked:
                    self._record(child)
                    todo.append(child)

    def kill_all(self) -> None:
        """SIGKILL every recorded process still alive, rescanning for descendants born meanwhile."""
        self.adopting = False
        for _ in range(5):
            self.scan()
            alive = self._alive()
            if not alive:
                return
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    continue


def main() -> None:
    """Track the Ray processes of the parent until stdin closes, then kill those still alive."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    tracker = _Tracker(os.getppid())
    sys.stdout.buffer.write(b"1")
    sys.stdout.buffer.flush()
    stdin = sys.stdin.buffer.raw
    while True:
        tracker.scan()
        readable, _, _ = select.select([stdin], [], [], POLL_S)
        if readable:
            if not stdin.read(4096):  # end of file: the driver is done or dead
                break
            tracker.scan()
            tracker.adopting = False  # ray.init returned: Ray's own processes are all started
    tracker.kill_all()


if __name__ == "__main__":
    main()
