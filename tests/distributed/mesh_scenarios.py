"""Work run inside 4 spawned gloo ranks on 2 × 2 meshes (module-level so that spawn can import it).

One spawn runs every scenario (:func:`mesh_scenarios`); the tests in test_mesh.py compare the results with
one-process training computed in the test process. The model is :class:`muonlab.distributed.llama.Llama`.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from muonlab.distributed import llama
from tests.distributed.scenarios import run_scenarios

CONFIG = llama.LlamaConfig(vocab=32, dim=16, heads=4, hidden=32, layers=2)
BATCH, LENGTH = 4, 8
STEPS = 5
NS = dict(ns_coefficients=(3.4445, -4.775, 2.0315), ns_steps=5)

# (name, layout, model config, muon options, per-head q/k/v groups)
EQUIVALENCE = [
    ("hsdp", "hsdp", CONFIG, {}, False),
    ("hsdp_ns", "hsdp", CONFIG, NS, False),
    ("fsdp_tp", "fsdp_tp", CONFIG, {}, False),
    ("fsdp_tp_ns", "fsdp_tp", CONFIG, NS, False),
    ("fsdp_tp_fused_heads", "fsdp_tp", llama.LlamaConfig(**{**CONFIG.__dict__, "fused_qkv": True}), {}, True),
    ("tp_heads_ns", "tp", CONFIG, NS, True),
    ("ep", "ep", llama.LlamaConfig(**{**CONFIG.__dict__, "experts": 4, "layers": 1}), {}, False),
    # NorMuon: its row second moment and per-block norms summed over the shards, not over HSDP's replicas
    ("normuon_hsdp", "hsdp", CONFIG, {"optimizer": "normuon"}, False),
    # expert stacks and the gate on the "dp" sub-mesh in one group with the TP weights on the ("dp", "tp") mesh
    ("fsdp_tp_experts", "fsdp_tp", llama.LlamaConfig(**{**CONFIG.__dict__, "experts": 4, "layers": 1}), NS, False),
]


def make_model(config: llama.LlamaConfig = CONFIG) -> llama.Llama:
    torch.manual_seed(0)
    return llama.Llama(config)


def make_optimizer(model, options: dict, heads: bool):
    import muonlab

    options = dict(options)
    kind = muonlab.NorMuon if options.pop("optimizer", "muon") == "normuon" else muonlab.Muon
    return kind(llama.muon_groups(model, heads=heads), lr=0.05, weight_decay=0.1, adamw_lr=0.01, **options)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    tokens = torch.randint(0, CONFIG.vocab, (BATCH, LENGTH + 1), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]


def train(model, optimizer, steps, part: int = 0, parts: int = 1) -> None:
    for step in steps:
        x, y = batch(step)
        per = BATCH // parts
        x, y = x[part * per : (part + 1) * per], y[part * per : (part + 1) * per]
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def full_params(model) -> dict[str, torch.Tensor]:
    return {
        name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
        for name, p in model.named_parameters()
    }


def reference(config: llama.LlamaConfig, options: dict, heads: bool, steps: int = STEPS) -> dict[str, torch.Tensor]:
    """One process on the full batch."""
    model = make_model(config)
    train(model, make_optimizer(model, options, heads), range(steps))
    return full_params(model)


def laid_out(layout: str, config: llama.LlamaConfig, world_size: int):
    mesh = llama.make_mesh(layout, world_size)
    return llama.parallelize(make_model(config), layout, mesh), mesh


def equivalence_scenario(rank: int, world_size: int) -> dict:
    """Every layout of EQUIVALENCE trained STEPS steps; the placements seen, the optimizer's traffic, and what
    muonlab.plan said it would be."""
    import muonlab

    out = {}
    for name, layout, config, options, heads in EQUIVALENCE:
        model, mesh = laid_out(layout, config, world_size)
        optimizer = make_optimizer(model, options, heads)
        forecast = muonlab.plan(optimizer)  # before the first step, no collective
        from_model = muonlab.plan(model) if name == "hsdp" else None  # param_groups' routing: the same split here
        part, parts = llama.data_ranks(layout, mesh, rank)
        train(model, optimizer, range(STEPS), part, parts)
        out[name] = {
            "planned_sent": [forecast.bytes_sent(q) for q in range(world_size)],
            "planned_received": [forecast.bytes_received(q) for q in range(world_size)],
            "planned_flops": [r["flops"] for r in forecast.ranks],
            "planned_matrices": [len(r["matrices"]) for r in forecast.ranks],
            "plan_table": str(forecast),
            "plan_from_model": [from_model.bytes_sent(q) for q in range(world_size)] if from_model else None,
            "received": optimizer._distribution.stats.bytes_received,
            "params": full_params(model),
            "placements": {n: str(tuple(p.placements)) for n, p in model.named_parameters() if hasattr(p, "placements")},
            "flops": optimizer._distribution.stats.flops,
            "matrices": optimizer._distribution.stats.matrices,
            "bytes": optimizer._distribution.stats.bytes_sent,
        }
    return out


def local_blocks_scenario(rank: int, world_size: int) -> dict:
    """Expert stacks cut on the expert dim, and q/k/v cut by tensor parallelism on head boundaries: an optimizer
    holding only those steps with no collective but its one agreement all-reduce."""
    import muonlab
    from muonlab.distributed.measure import CollectiveCounter

    out = {}
    for name, layout, config, group in (
        ("ep", "ep", llama.LlamaConfig(**{**CONFIG.__dict__, "experts": 4, "layers": 1}), {"tensor_layout": "batch"}),
        ("tp_heads", "tp", CONFIG, {"num_heads": CONFIG.heads}),
        ("fsdp_tp_fused_heads", "fsdp_tp", llama.LlamaConfig(**{**CONFIG.__dict__, "fused_qkv": True}),
         {"num_heads": 3 * CONFIG.heads}),
    ):
        model, mesh = laid_out(layout, config, world_size)
        if layout == "ep":
            params = [p for n, p in model.named_parameters() if p.ndim == 3]
        else:
            params = [p for n, p in model.named_parameters() if ".attention.w" in n and not n.endswith("wo.weight")]
        optimizer = muonlab.Muon([{"params": params, **group}], lr=0.05)
        for p in params:
            p.grad = torch.distributed.tensor.DTensor.from_local(
                torch.randn(p.to_local().shape, generator=torch.Generator().manual_seed(rank)),
                p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())
        with CollectiveCounter(world_size, rank) as counter:
            optimizer.step()
        out[name] = {
            "calls": dict(counter.calls),
            "collectives": optimizer._distribution.stats.collectives,
            "placements": [str(tuple(p.placements)) for p in params],
            "flops": optimizer._distribution.stats.flops,
        }
    return out


def pipeline_scenario(rank: int, world_size: int) -> dict:
    """Two pipeline stages (ranks 0-1: embedding and first block; ranks 2-3: second block and head), each FSDP2 on
    its own 1-D sub-mesh with its own Muon; activations and their gradients travel by send/recv."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (2, world_size // 2), mesh_dim_names=("pp", "dp"))
    stage, dp = mesh.get_coordinate()
    stage_mesh = mesh["dp"]
    model = make_model()
    if stage == 0:
        modules = torch.nn.ModuleList([model.tok_embeddings, model.layers[0]])
    else:
        modules = torch.nn.ModuleList([model.layers[1], model.norm, model.output])
    for module in modules:
        fully_shard(module, mesh=stage_mesh)
    optimizer = _stage_optimizer(modules)
    peer = rank + world_size // 2 if stage == 0 else rank - world_size // 2
    per = BATCH // mesh.size(1)
    for step in range(STEPS):
        x, y = batch(step)
        x, y = x[dp * per : (dp + 1) * per], y[dp * per : (dp + 1) * per]
        if stage == 0:
            h = modules[1](modules[0](x))
            dist.send(h.detach().contiguous(), peer)
            grad = torch.empty_like(h)
            dist.recv(grad, peer)
            h.backward(grad)
        else:
            h = torch.empty(per, LENGTH, CONFIG.dim)
            dist.recv(h, peer)
            h.requires_grad_(True)
            logits = modules[2](modules[1](modules[0](h)))
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            loss.backward()
            dist.send(h.grad.contiguous(), peer)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    names = ["tok_embeddings", "layers.0"] if stage == 0 else ["layers.1", "norm", "output"]
    params = {}
    for prefix, module in zip(names, modules):
        for n, p in module.named_parameters():
            params[f"{prefix}.{n}"] = p.full_tensor().detach().clone()
    return {"stage": stage, "params": params, "group_size": dist.get_world_size(optimizer._distribution.resolve(
        [p for g in optimizer.param_groups if g["rule"] == "spectral" for p in g["params"]]).group)}


def _stage_optimizer(modules):
    import muonlab

    matrices = [p for m in modules for n, p in m.named_parameters() if p.ndim == 2 and isinstance(m, llama.Block)]
    rest = [p for m in modules for p in m.parameters() if not (p.ndim == 2 and isinstance(m, llama.Block))]
    return muonlab.Muon([{"params": matrices, "kind": "matrix"}, {"params": rest, "kind": "vector"}],
                        lr=0.05, weight_decay=0.1, adamw_lr=0.01)


def refusal_scenario(rank: int, world_size: int) -> dict:
    """A Partial placement is refused when the optimizer is built, on every rank, in one line."""
    import muonlab
    from torch.distributed.tensor import DTensor, Partial, Shard

    mesh = llama.make_mesh("hsdp", world_size)
    weight = torch.nn.Parameter(DTensor.from_local(torch.randn(3, 4), mesh, [Partial(), Shard(0)], run_check=False))
    try:
        muonlab.Muon([("blocks.0.weight", weight)], lr=0.01)
    except Exception as err:  # the test reads type and message
        return {"error": f"{type(err).__name__}: {err}"}
    return {"error": "no error"}


CHECKPOINT_STEPS = 2  # per stage of the chain


def checkpoint_scenario(rank: int, world_size: int, root: str) -> dict:
    """FSDP×TP (4 ranks) → HSDP (4 ranks) → FSDP (2 ranks) through DCP checkpoints, CHECKPOINT_STEPS steps each;
    the last checkpoint is loaded by one process in the test. State keys are compared across ranks."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    out: dict = {"keys": {}}
    step = 0
    previous = None
    for stage, layout in enumerate(("fsdp_tp", "hsdp", "fsdp2")):
        if layout == "fsdp2":  # two independent 2-rank FSDP runs: ranks (0, 1) and (2, 3)
            mesh = init_device_mesh("cpu", (2, world_size // 2), mesh_dim_names=("copy", "dp"))["dp"]
            model = llama.parallelize(make_model(), "fsdp", mesh)
            part, parts = mesh.get_local_rank(), mesh.size()
        else:
            model, mesh = laid_out(layout, CONFIG, world_size)
            part, parts = llama.data_ranks(layout, mesh, rank)
        if previous is not None:  # fresh values: only the checkpoint can make the run continue
            torch.manual_seed(1000 + stage)
            with torch.no_grad():
                for p in model.parameters():
                    p.to_local().normal_()
        optimizer = make_optimizer(model, {}, False)
        if previous is not None:
            # a fresh optimizer's state dict: torch's helper first runs a zero-lr step to create the state (which,
            # as for torch.optim.AdamW, counts as a step: so it is done only right before loading)
            model_sd, optim_sd = get_state_dict(model, optimizer)
            out["keys"][f"{layout}_fresh"] = sorted((k, tuple(sorted(v))) for k, v in optim_sd["state"].items())
            state = {"model": model_sd, "optim": optim_sd}
            dcp.load(state, checkpoint_id=previous)
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        train(model, optimizer, range(step, step + CHECKPOINT_STEPS), part, parts)
        step += CHECKPOINT_STEPS
        out[f"after_{layout}"] = full_params(model)
        model_sd, optim_sd = get_state_dict(model, optimizer)
        out["keys"][f"{layout}_trained"] = sorted((k, tuple(sorted(v))) for k, v in optim_sd["state"].items())
        previous = os.path.join(root, f"step{step}")
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=previous)
        dist.barrier()
    out["final"] = full_params(model)
    out["steps"] = step
    out["path"] = previous
    return out


def pieces_scenario(rank: int, world_size: int) -> dict:
    """Does the Layout's piece of this rank, cut from the whole tensor, equal the DTensor's local tensor? For the
    FSDP×TP model's parameters and hand-made placements, uneven where torch allows it (7 rows on 2: 4 + 3;
    distribute_tensor needs _StridedShard's dim to divide evenly)."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.placement_types import _StridedShard

    from muonlab.distributed.layout import take
    from muonlab.distributed.resolve import layout_of

    model, mesh = laid_out("fsdp_tp", CONFIG, world_size)
    checks = {}
    for name, p in model.named_parameters():
        layout = layout_of(p, name, mesh)
        checks[name] = torch.equal(take(p.full_tensor(), layout.piece(rank)), p.to_local())
    generator = torch.Generator().manual_seed(0)
    for placements, shape in (([Shard(1), Shard(0)], (7, 9)), ([Replicate(), Shard(1)], (7, 9)),
                              ([Shard(0), Shard(0)], (7, 9)), ([_StridedShard(0, split_factor=2), Shard(0)], (8, 9)),
                              ([_StridedShard(1, split_factor=2), Shard(1)], (7, 12))):
        whole = torch.randn(shape, generator=generator)
        t = distribute_tensor(whole, mesh, placements)
        layout = layout_of(t)
        checks[str(placements)] = torch.equal(take(whole, layout.piece(rank)), t.to_local())
    return checks


SCENARIOS = {
    "pieces": pieces_scenario,
    "equivalence": equivalence_scenario,
    "local_blocks": local_blocks_scenario,
    "pipeline": pipeline_scenario,
    "refusal": refusal_scenario,
}


def mesh_scenarios(rank: int, world_size: int, root: str) -> dict:
    """Every scenario of this module, the checkpoint chain writing under ``root``."""
    return run_scenarios(dict(SCENARIOS, checkpoint=lambda r, w: checkpoint_scenario(r, w, root)), rank, world_size)
