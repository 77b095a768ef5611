"""Every command checks its output location before any work: one line on stderr, exit 2."""

from __future__ import annotations

import pytest

from muonlab.cli import main

BAD = "/proc/muonlab_no_such_dir/sub"


def _no_work(*args, **kwargs):
    raise AssertionError("the command started working before checking --out")


@pytest.mark.parametrize("argv", [
    ["run", "matfac", "--kappas", "10", "--steps", "5", "--no-progress", "--out", BAD],
    ["reproduce", "--quick", "--no-progress", "--out", BAD],
    ["bench", "polar", "--quick", "--out", BAD + "/polar.json"],
    ["bench", "step", "--quick", "--out", BAD + "/step.json"],
    ["bench", "dist", "--quick", "--out", BAD + "/dist.json"],
])
def test_an_unwritable_out_fails_first_in_one_line(argv, monkeypatch, capsys):
    import muonlab.bench.dist
    import muonlab.bench.polar
    import muonlab.bench.step
    import muonlab.experiments.registry

    monkeypatch.setattr(muonlab.experiments.registry, "execute", _no_work)
    for module in (muonlab.bench.polar, muonlab.bench.step, muonlab.bench.dist):
        monkeypatch.setattr(module, "run", _no_work)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("muonlab: error: --out") and "muonlab_no_such_dir" in err


def test_a_bench_out_that_is_a_folder_is_refused(tmp_path, capsys):
    assert main(["bench", "polar", "--quick", "--out", str(tmp_path)]) == 2
    assert "is a directory; expected a file name" in capsys.readouterr().err
