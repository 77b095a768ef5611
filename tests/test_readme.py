"""Every ```python block of README.md runs as written (a newcomer copies them first).

Blocks run in a fresh namespace inside a temporary working directory. A block that starts a process group
(the FSDP2 script) runs in its own interpreter, on a free port, so that this process never holds one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of each ```python block."""
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text[: match.start()].count("\n") + 1, match.group(1)))
    return blocks


BLOCKS = python_blocks()
# Integrations whose library is optional (not in the test extra): their blocks run where it is installed.
OPTIONAL = ("timm",)


def test_the_readme_has_python_blocks_and_opens_with_the_two_commands():
    assert len(BLOCKS) >= 4
    bash = re.findall(r"^```bash\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    assert "pip install" in bash[0] and "muonlab reproduce --quick" in bash[0]
    tests = [b for b in bash if "pytest" in b]
    assert tests and "pip install" in tests[0]


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_block_runs_as_written(line, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in OPTIONAL:
        if re.search(rf"^import .*\b{name}\b", code, flags=re.M) and importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (an optional integration)")
    if "init_process_group" in code:
        script = tmp_path / "block.py"
        script.write_text(code)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
            env.pop(key, None)
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"README.md:{line} failed:\n{done.stderr[-3000:]}"
        return
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
