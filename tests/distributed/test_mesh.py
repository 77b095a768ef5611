"""n-D meshes (2 × 2 at world 4): HSDP, FSDP2 over tensor parallelism, tensor parallelism, expert stacks,
pipeline stages and DCP checkpoints moving between layouts, each against one-process training."""

from __future__ import annotations

import tempfile

import pytest
import torch

from muonlab.distributed.launch import run_on_ranks
from tests.distributed import mesh_scenarios as ms

TOLERANCE = 1e-5
WORLD = 4
_CACHE: dict = {}


def _results() -> list[dict]:
    if "results" not in _CACHE:
        root = tempfile.mkdtemp(prefix="muonlab-mesh-")
        _CACHE["root"] = root
        _CACHE["results"] = run_on_ranks(ms.mesh_scenarios, WORLD, root, timeout=240.0)
    return _CACHE["results"]


def _scenario(name: str) -> list[dict]:
    outs = [r[name] for r in _results()]
    for rank, out in enumerate(outs):
        if isinstance(out, dict) and "error" in out and isinstance(out["error"], str) and "Traceback" in out["error"]:
            pytest.fail(f"scenario {name!r} raised on rank {rank}:\n{out['error']}")
    return outs


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _max_rel(got: dict, want: dict) -> tuple[float, str]:
    assert got.keys() == want.keys()
    return max((_rel(got[n], want[n]), n) for n in want)


def test_each_ranks_piece_is_exactly_its_local_tensor():
    for rank, out in enumerate(_scenario("pieces")):
        assert len(out) > 10
        assert all(out.values()), (rank, [k for k, ok in out.items() if not ok])


@pytest.mark.parametrize("case", ms.EQUIVALENCE, ids=[c[0] for c in ms.EQUIVALENCE])
def test_layout_matches_one_process(case):
    name, layout, config, options, heads = case
    reference = ms.reference(config, options, heads)
    start = dict(ms.make_model(config).named_parameters())
    outs = _scenario("equivalence")
    for rank, out in enumerate(outs):
        worst, where = _max_rel(out[name]["params"], reference)
        assert worst <= TOLERANCE, (name, rank, where, worst)
    for n, want in reference.items():  # training moved every parameter: the comparison is not vacuous
        assert _rel(want, start[n].detach()) > 1e-3, n


def test_the_layouts_are_the_ones_torch_produces():
    out = _scenario("equivalence")[0]
    hsdp, fsdp_tp = out["hsdp"]["placements"], out["fsdp_tp"]["placements"]
    assert hsdp["layers.0.attention.wq.weight"] == "(Replicate(), Shard(dim=0))"
    # column-parallel under FSDP: the strided shard; row-parallel: Shard(0) over dp, Shard(1) over tp
    assert fsdp_tp["layers.0.attention.wq.weight"] == "(_StridedShard(dim=0, sf=2), Shard(dim=0))"
    assert fsdp_tp["layers.0.attention.wo.weight"] == "(Shard(dim=0), Shard(dim=1))"
    assert out["ep"]["placements"]["layers.0.moe.w_in"] == "(Shard(dim=0),)"


@pytest.mark.parametrize("name,per_step", [("hsdp", 2 * 7), ("fsdp_tp", 2 * 7), ("fsdp_tp_experts", 7 + 1 + 2)])
def test_polar_work_is_spread_over_every_rank_of_the_mesh_once(name, per_step):
    # every matrix (and expert stack) computed once in all, on one of the 4 ranks — also the ones outside the TP
    # plan (the gate, the stacks), which live on the "dp" sub-mesh replicated over "tp"
    outs = _scenario("equivalence")
    assert sum(out[name]["matrices"] for out in outs) == per_step * ms.STEPS
    assert all(out[name]["matrices"] > 0 for out in outs), [out[name]["matrices"] for out in outs]


@pytest.mark.parametrize("case", ms.EQUIVALENCE, ids=[c[0] for c in ms.EQUIVALENCE])
def test_the_preflight_plan_equals_what_the_steps_did(case):
    name = case[0]
    outs = _scenario("equivalence")
    for rank, out in enumerate(outs):
        got = out[name]
        assert got["planned_sent"][rank] * ms.STEPS == got["bytes"], (rank, got["planned_sent"], got["bytes"])
        assert got["planned_received"][rank] * ms.STEPS == got["received"]
        assert got["planned_flops"][rank] * ms.STEPS == pytest.approx(got["flops"])
        assert got["planned_sent"] == outs[0][name]["planned_sent"]  # every rank plans the same
    if name == "hsdp":  # muonlab.plan(model) builds Muon(param_groups(model)): the same matrices on Muon here
        assert outs[0][name]["plan_from_model"] == outs[0][name]["planned_sent"]
    table = outs[0][name]["plan_table"]
    assert "imbalance" in table and "AdamW" in table
    if name in ("hsdp", "fsdp_tp"):
        assert all(sent > 0 for sent in outs[0][name]["planned_sent"])
    if name in ("ep", "tp_heads_ns"):  # expert stacks and aligned heads: only the other matrices travel
        assert sum(outs[0][name]["planned_sent"]) < sum(outs[0]["hsdp"]["planned_sent"])


@pytest.mark.parametrize("name", ["ep", "tp_heads", "fsdp_tp_fused_heads"])
def test_whole_blocks_are_computed_where_they_live_with_no_collective(name):
    outs = _scenario("local_blocks")
    for out in outs:
        case = out[name]
        assert case["collectives"] == 0
        # the only collective of the step is the agreement all-reduce (finite gradients, same parameters)
        assert case["calls"] == {"allreduce_": 1}, case["calls"]
        assert case["flops"] > 0  # and every rank did its share
    assert "Shard(dim=0)" in outs[0]["ep"]["placements"][0]
    assert outs[0]["fsdp_tp_fused_heads"]["placements"][0] == "(_StridedShard(dim=0, sf=2), Shard(dim=0))"


def test_pipeline_stages_each_with_its_own_optimizer_match_one_process():
    reference = ms.reference(ms.CONFIG, {}, False)
    outs = _scenario("pipeline")
    assert [out["stage"] for out in outs] == [0, 0, 1, 1]
    assert all(out["group_size"] == 2 for out in outs)  # each optimizer talks within its stage only
    merged = {}
    for out in outs:
        merged.update(out["params"])
    worst, where = _max_rel(merged, reference)
    assert worst <= TOLERANCE, (where, worst)


def test_partial_placement_is_refused_at_construction_on_every_rank_in_one_line():
    for out in _scenario("refusal"):
        message = out["error"]
        assert message.startswith("NotImplementedError"), message
        assert "blocks.0.weight" in message and "DeviceMesh (2, 2)" in message and "Partial" in message
        assert "\n" not in message


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_checkpoints_move_between_layouts_and_to_one_process():
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    outs = _scenario("checkpoint")
    steps = outs[0]["steps"]
    # every rank has the same optimizer state keys, from the first get_state_dict of a fresh optimizer on
    for key in outs[0]["keys"]:
        assert all(out["keys"][key] == outs[0]["keys"][key] for out in outs), key
    trained = outs[0]["keys"]["fsdp_tp_trained"]
    assert len(trained) == len(list(ms.make_model().parameters()))
    for layout in ("hsdp", "fsdp2"):  # a fresh optimizer already has every key the trained one saves
        assert outs[0]["keys"][f"{layout}_fresh"] == outs[0]["keys"][f"{layout}_trained"] == trained, layout
    # the last distributed checkpoint, resumed by one process for CHECKPOINT_STEPS more steps
    model = ms.make_model()
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    optimizer = ms.make_optimizer(model, {}, False)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=outs[0]["path"])
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    ms.train(model, optimizer, range(steps, steps + ms.CHECKPOINT_STEPS))
    reference = ms.reference(ms.CONFIG, {}, False, steps=steps + ms.CHECKPOINT_STEPS)
    worst, where = _max_rel(ms.full_params(model), reference)
    assert worst <= TOLERANCE, (where, worst)
    # and the distributed chain itself equals uninterrupted training up to its last step
    midway = ms.reference(ms.CONFIG, {}, False, steps=steps)
    for out in outs:
        worst, where = _max_rel(out["final"], midway)
        assert worst <= TOLERANCE, (where, worst)
