"""Writing results as JSON: the one function every part of the lab uses (a leaf: it imports nothing from muonlab).

Results are written atomically (a temporary file in the same folder, then ``os.replace``), so a reader never sees a
half-written file and an interrupted run leaves the previous file as it was. JSON has no NaN or infinity: non-finite
floats become ``null``; keys become strings; anything else JSON cannot hold (a torch dtype, a path) is written as its
``str``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = ["json_safe", "write_json"]


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
