"""Atomic result directories: write everything into a fresh temporary sibling, then rename it into place.

An interrupted or failed run removes its temporary directory, so ``DIR`` either holds a complete result set
(results.json + plots) or is left as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


class OutputError(Exception):
    """The output directory cannot be written (message names the path and the reason)."""


def check_writable(out: str | os.PathLike) -> Path:
    """Resolve ``out`` and make sure a directory can be created beside it; raise OutputError otherwise."""
    path = Path(out).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} exists and is not a directory")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--out {path}: cannot create parent directory ({err.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--out {path}: directory {parent} is not writable")
    return path


def prepare_directory(out: str | os.PathLike) -> Path:
    """Create ``out`` (and its parents; mode 0o777 minus the umask, like ``mkdir -p``) and prove it writable by
    creating and removing a probe file; raise OutputError naming the path otherwise.

    For commands that write into ``out`` as they go (``muonlab train``: checkpoints, then results and plots), so that
    a bad ``--out`` fails before any work instead of after it. ``os.access`` is not enough: it says yes to root for
    paths such as /proc/x that no one can create."""
    path = Path(out).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".muonlab-write-probe-"):
            pass
    except OSError as err:
        raise OutputError(f"--out {path}: cannot write there ({err.strerror or err})") from None
    return path


def prepare_file(out: str | os.PathLike, option: str = "--out") -> Path:
    """For a command that writes one file at the end (the benchmarks' JSON): check before any work that ``out`` is
    not a folder and that its folder can be created and written (a probe file); raise OutputError otherwise."""
    path = Path(out).expanduser().resolve()
    if path.is_dir():
        raise OutputError(f"{option} {path} is a directory; expected a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent, prefix=".muonlab-write-probe-"):
            pass
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot write there ({err.strerror or err})") from None
    return path


def _make_temp_sibling(parent: Path, prefix: str) -> Path:
    """``tempfile.mkdtemp`` creates 0o700 folders; a result folder should get the ordinary permissions
    (0o777 minus the umask, as ``mkdir`` gives), so it is created with ``os.mkdir`` under a unique name."""
    for _ in range(100):
        candidate = parent / f"{prefix}{os.urandom(4).hex()}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name under {parent}")


@contextmanager
def atomic_directory(out: str | os.PathLike):
    """Yield a temporary directory; on success it replaces ``out``, on any exception it is removed."""
    path = check_writable(out)
    try:
        tmp = _make_temp_sibling(path.parent, f".{path.name}.tmp-")
    except OSError as err:
        raise OutputError(f"--out {path}: cannot write there ({err.strerror})") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, old / "previous")
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
