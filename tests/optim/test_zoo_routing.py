"""The routing of every parameter of 17 real architectures (transformers configs at tiny sizes, no downloads) against
the reviewed table tests/optim/zoo_routing.json (how to regenerate it: tests/optim/zoo_models.py)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

import muonlab  # noqa: E402
from tests.optim import zoo_models  # noqa: E402

TABLE = json.loads(zoo_models.TABLE.read_text())


def test_the_zoo_covers_at_least_15_architectures_of_every_family():
    assert len(TABLE) >= 15
    assert {"gpt2", "llama", "mixtral", "deepseek_v3", "bert", "t5", "vit", "convnext", "resnet", "swin", "clip",
            "whisper"} <= set(TABLE)
    assert set(TABLE) == set(zoo_models._builders())


@pytest.mark.parametrize("arch", list(TABLE))
def test_every_parameter_is_routed_as_the_table_says(arch):
    model = zoo_models.build(arch)
    rows = zoo_models.routing_rows(model)
    assert list(rows) == list(TABLE[arch]), "parameters added or missing: regenerate and review the table"
    wrong = {name: (rows[name], want) for name, want in TABLE[arch].items() if rows[name] != want}
    assert not wrong, wrong
    # explain names the deciding criterion on every parameter's line
    lines = muonlab.explain(model, file=None).splitlines()[2:]
    for line, (name, (_, _, criteria, _)) in zip(lines, rows.items()):
        assert line.startswith(name + " ") and f" {criteria.split('+')[0]}: " in line, line


def test_the_zoo_table_exercises_every_criterion():
    used = {c for rows in TABLE.values() for (_, _, criteria, _) in rows.values() for c in criteria.split("+")}
    assert set(muonlab.optim.routing.CRITERIA) - {"no_weight_decay"} <= used   # no_weight_decay: timm models only


def test_docs_routing_shows_the_table():
    doc = (zoo_models.TABLE.parents[2] / "docs" / "routing.md").read_text()
    assert zoo_models.markdown(TABLE) in doc, "docs/routing.md: paste `python -m tests.optim.zoo_models --markdown`"


# muonlab's decisions that timm's shape-only rule cannot make (docs/routing.md, "Where muonlab and timm's Muon rules
# differ"): AdamW by module or role where timm's shape test passes; per-expert matrices of a stack timm flattens.
ADAMW_BY_MODULE = {"embedding", "tied", "named_head", "guessed_head", "embedding_role"}


def test_muonlab_disagrees_with_timms_muon_rules_only_where_documented():
    timm_muon = pytest.importorskip("timm.optim.muon")
    for arch in TABLE:
        for r in muonlab.optim.route(zoo_models.build(arch)):
            timm_says_muon = bool(timm_muon._is_suitable_for_muon(r.param))
            if timm_says_muon == (r.kind == "matrix"):
                continue
            if timm_says_muon:
                assert r.criterion in ADAMW_BY_MODULE, (arch, r.name, r.criteria)
            else:
                assert r.criterion == "stack", (arch, r.name, tuple(r.param.shape), r.criteria)


@pytest.mark.parametrize("cls", [muonlab.Muon, muonlab.NorMuon])
def test_every_zoo_model_takes_a_step_with_its_routing(cls):
    """The groups routing builds (transposed, fused sections of stacks, routers…) are groups the optimizers take."""
    for arch in TABLE:
        model = zoo_models.build(arch)
        opt = cls(muonlab.param_groups(model), lr=0.02)
        gen = torch.Generator().manual_seed(0)
        params = [p for p in model.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        for p, b in zip(params, before):
            assert torch.isfinite(p).all() and not torch.equal(p, b), arch
