"""Files the lab writes, all atomically: JSON results and result folders (a leaf: it imports nothing from muonlab).

- :func:`write_json`: a temporary file in the same folder, then ``os.replace``, so a reader never sees a half-written
  file and an interrupted run leaves the previous file as it was. JSON has no NaN or infinity: non-finite floats
  become ``null``; keys become strings; anything else JSON cannot hold (a torch dtype, a path) is written as its
  ``str``.
- :func:`atomic_directory`: everything is written into a fresh temporary sibling, then renamed into place; an
  interrupted or failed run removes it, so ``DIR`` either holds a complete result set (results.json + plots) or is
  left as it was.
- :func:`prepare_directory`, :func:`prepare_file`: check before any work that ``--out`` can be written, so that a bad
  one fails in one line (:class:`OutputError`) instead of after the run.

Every layer that writes results (the trainer, the benchmarks, the experiments) uses this one module.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputError", "atomic_directory", "check_writable", "json_safe", "prepare_directory", "prepare_file",
           "write_json"]


def json_safe(value):
    """``value`` with every non-finite float replaced by None and every dict key made a string (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, payload) -> None:
    """Write ``json_safe(payload)`` to ``path`` atomically, creating the folder if needed (indent 1, final newline)."""
    path = Path(path)
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    # open(), not mkstemp: the file gets the ordinary permissions (umask), like any file the user writes
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as handle:
            json.dump(json_safe(payload), handle, indent=1, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
