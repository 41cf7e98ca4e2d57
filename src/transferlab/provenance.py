"""Where and with what a result was made: package versions, git commit, host, time."""

from __future__ import annotations

import datetime as _dt
import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["collect_provenance", "git_commit"]


def git_commit(path: str | Path = ".") -> str | None:
    """The commit of the transferlab source checkout containing ``path`` (suffixed ``+dirty`` if
    modified), or None when ``path`` is not inside a checkout of transferlab itself (for example an
    installed package inside some other repository)."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        if not (Path(top) / "src" / "transferlab" / "__init__.py").is_file():
            return None
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def collect_provenance() -> dict[str, str | None]:
    """A flat dict describing this process: versions of transferlab and its numeric stack, the git
    commit of the source tree (if it is a checkout), host, platform and UTC time."""
    from transferlab import __version__

    return {
        "transferlab": __version__,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "torch": _version("torch"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
