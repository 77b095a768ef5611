"""Work run inside the spawned ranks (module-level so that spawn can import it).

Each scenario returns plain data (tensors, numbers, strings); the tests in this folder assert on it.
Spawning is slow on a 2-core machine, so one spawn per world size runs every scenario
(:func:`all_scenarios`) and the tests share the result through a module-scoped fixture.
"""

from __future__ import annotations

import traceback

import torch
import torch.distributed as dist

from muonlab.distributed.comm import CommStats, map_whole
from muonlab.distributed.plan import assign_owners
from muonlab.distributed.resolve import layout_of

# Shapes with repeats (batched on the owner), rows not divisible by 2 or 3, an empty shard on
# 3 ranks (4 rows → 2, 2, 0), a conv-like 3-D tensor, and float64 next to float32.
COMM_SHAPES = [(7, 5), (7, 5), (4, 6), (6, 4), (7, 5), (5, 2, 3), (9, 9)]
COMM_DTYPES = [torch.float32] * 6 + [torch.float64]


def orthogonalize(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The function the owners apply: polar factor of each tensor seen as a matrix (rows × rest)."""
    from muonlab import polar

    return [polar(t.reshape(t.shape[0], -1), method="svd").reshape(t.shape) for t in tensors]


def reference_inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    return [torch.randn(s, generator=generator, dtype=d) for s, d in zip(COMM_SHAPES, COMM_DTYPES)]


def comm_scenario(rank: int, world_size: int) -> dict:
    """map_whole on replicated tensors, on DTensor Shard(0) / Shard(1) / Replicate; counts who computed what."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    full = reference_inputs()
    owners = assign_owners([t.shape for t in full], world_size)
    calls: list[int] = []

    def counting(tensors):
        calls.append(len(tensors))
        return orthogonalize(tensors)

    out: dict = {"owners": owners}
    stats = CommStats()
    replicated = map_whole(counting, full, [layout_of(t) for t in full], owners, None, stats)
    out["replicated"] = [r.clone() for r in replicated]
    out["replicated_bytes"] = stats.bytes_sent
    out["replicated_calls"] = list(calls)

    mesh = init_device_mesh("cpu", (world_size,))
    for name, placement in (("shard0", Shard(0)), ("shard1", Shard(1)), ("replicate", Replicate())):
        calls.clear()
        stats = CommStats()
        dtensors = [distribute_tensor(t, mesh, [placement]) for t in full]
        results = map_whole(counting, dtensors, [layout_of(t) for t in dtensors], owners, mesh.get_group(), stats)
        out[f"{name}_types"] = [type(r).__name__ for r in results]
        out[f"{name}_placements"] = [str(r.placements) for r in results]
        out[f"{name}_local_match"] = all(r.to_local().shape == d.to_local().shape for r, d in zip(results, dtensors))
        out[name] = [r.full_tensor() for r in results]
        out[f"{name}_bytes"] = stats.bytes_sent
        out[f"{name}_calls"] = list(calls)
    return out


def all_scenarios(rank: int, world_size: int) -> dict:
    return run_scenarios(SCENARIOS, rank, world_size)


def run_scenarios(scenarios: dict, rank: int, world_size: int) -> dict:
    """Run every scenario; an exception in one is recorded (with traceback) instead of killing the others."""
    results = {}
    for name, scenario in scenarios.items():
        try:
            results[name] = scenario(rank, world_size)
        except Exception:  # reported by the test that reads this scenario
            results[name] = {"error": traceback.format_exc()}
        dist.barrier()
    return results


# ---------------------------------------------------------------- training equivalence

BATCH = 12  # divisible by 2 and 3: every rank gets an equal slice, so mean-of-means = full mean
STEPS = 3


class TinyNet(torch.nn.Module):
    """Matrices of several shapes (two equal ones, rows not divisible by 2 or 3, a 3-D tensor) plus vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(6, 10)
        self.h1 = torch.nn.Linear(10, 10, bias=False)
        self.h2 = torch.nn.Linear(10, 10, bias=False)
        self.mix = torch.nn.Parameter(torch.randn(7, 10, 1) / 10**0.5)  # flattened to 7 x 10 by Muon
        self.out = torch.nn.Linear(7, 5)
        self.gain = torch.nn.Parameter(torch.ones(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.h1(h)) * self.gain
        h = torch.tanh(self.h2(h))
        h = torch.tanh(h @ self.mix.squeeze(-1).T)
        return self.out(h)


def make_model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def make_data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(BATCH, 6, generator=generator), torch.randn(BATCH, 5, generator=generator)


# name -> settings: PolarGrad (nuclear-norm scale, QDWH), polar-first PolarGrad (ν computed from whole
# matrices in apply_updates), AdamQ (Ψ_¼ of Adam's normalized update), SimplifiedMuon (exact polar), NorMuon
# (row second moment sharded with the rows, per-block norms summed over shards) with cautious weight decay.
OTHER_OPTIMIZERS = {
    "polargrad": dict(lr=1e-3),
    "polargrad_first": dict(lr=1e-3, polar_first=True),
    "adamq": dict(lr=0.01),
    "simplified_muon": dict(lr=0.01),
    "normuon": dict(lr=0.01, cautious_wd=True),
}


def make_optimizer(model: torch.nn.Module, kind: str = "muon", **kwargs):
    import muonlab

    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    if kind in OTHER_OPTIMIZERS:  # the rest of the family, through the same hook
        return muonlab.make_optimizer(kind.removesuffix("_first"), model.parameters(), **OTHER_OPTIMIZERS[kind])
    if kind == "muon_bf16":  # the iteration in bf16 (CUDA's default): matrices then travel in bf16 too
        kwargs = dict(kwargs, polar_dtype=torch.bfloat16)
    return muonlab.Muon(model.parameters(), lr=0.05, weight_decay=0.1, adamw_lr=0.01, adamw_weight_decay=0.1, **kwargs)


def train(model, optimizer, steps: range, rank: int = 0, world_size: int = 1) -> None:
    dtype = next(model.parameters()).dtype
    for step in steps:
        x, y = (t.to(dtype) for t in make_data(step))
        per_rank = BATCH // world_size
        x, y = x[rank * per_rank : (rank + 1) * per_rank], y[rank * per_rank : (rank + 1) * per_rank]
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def full_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
        for name, p in model.named_parameters()
    }


def single_process_reference(kind: str = "muon", steps: int = STEPS) -> dict[str, torch.Tensor]:
    model = make_model()
    train(model, make_optimizer(model, kind), range(steps))
    return full_params(model)


def shard_model(model: torch.nn.Module, world_size: int) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world_size,))
    for module in (model.inp, model.h1, model.h2, model.out):
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def ddp_scenario(rank: int, world_size: int) -> dict:
    """DDP (plain tensors, gradient all-reduce) + Muon splitting its matrix work across ranks."""
    model = make_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = make_optimizer(model)
    train(ddp, optimizer, range(STEPS), rank, world_size)
    return {
        "params": full_params(model),
        "matrices_owned": optimizer._distribution.stats.matrices,
        "flops_owned": optimizer._distribution.stats.flops,
    }


def fsdp_scenario(rank: int, world_size: int) -> dict:
    """FSDP2 fully_shard (DTensor Shard(0)) + Muon with no extra arguments."""
    model = shard_model(make_model(), world_size)
    optimizer = make_optimizer(model)
    train(model, optimizer, range(STEPS), rank, world_size)
    types = sorted({type(v).__name__ for state in optimizer.state.values() for v in state.values()})
    return {
        "params": full_params(model),
        "param_types": sorted({type(p).__name__ for p in model.parameters()}),
        "state_types": types,
        "matrices_owned": optimizer._distribution.stats.matrices,
    }


def checkpoint_scenario(rank: int, world_size: int, root: str = "") -> dict:
    """FSDP2: save model + optimizer with torch.distributed.checkpoint after 2 steps, resume in fresh objects."""
    import os
    import tempfile

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model = shard_model(make_model(), world_size)
    optimizer = make_optimizer(model)
    train(model, optimizer, range(2), rank, world_size)
    # one directory for all ranks: rank 0 makes it, the others learn its name
    names = [tempfile.mkdtemp(prefix="muonlab-dcp-") if rank == 0 else None]
    dist.broadcast_object_list(names, src=0)
    path = os.path.join(names[0], "step2")
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
    train(model, optimizer, range(2, 4), rank, world_size)
    uninterrupted = full_params(model)
    uninterrupted_state = {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in optimizer.state[next(iter(model.h1.parameters()))].items()
    }

    torch.manual_seed(123)  # the fresh model starts elsewhere: only the checkpoint can make it equal
    resumed_model = shard_model(TinyNet(), world_size)
    resumed_opt = make_optimizer(resumed_model)
    model_sd, optim_sd = get_state_dict(resumed_model, resumed_opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(resumed_model, resumed_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    train(resumed_model, resumed_opt, range(2, 4), rank, world_size)
    resumed_state = {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v)
        for k, v in resumed_opt.state[next(iter(resumed_model.h1.parameters()))].items()
    }
    dist.barrier()
    if rank == 0:
        import shutil

        shutil.rmtree(names[0], ignore_errors=True)
    return {
        "uninterrupted": uninterrupted,
        "resumed": full_params(resumed_model),
        "uninterrupted_state": uninterrupted_state,
        "resumed_state": resumed_state,
    }


def _error_of(fn) -> str:
    try:
        fn()
    except Exception as err:  # the test reads the type and message
        return f"{type(err).__name__}: {err}"
    return "no error"


def bad_input_scenario(rank: int, world_size: int) -> dict:
    """Every bad set-up raises a clear error on every rank (and nothing hangs: the harness has a timeout)."""
    import muonlab
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    out = {}
    sharded = shard_model(make_model(), world_size)
    plain = torch.nn.Linear(4, 4)
    out["mixed"] = _error_of(lambda: muonlab.Muon([sharded.h1.weight, plain.weight]))
    out["none_with_dtensor"] = _error_of(lambda: muonlab.Muon(sharded.parameters(), distributed="none"))
    mesh_2d = init_device_mesh("cpu", (1, world_size), mesh_dim_names=("replica", "shard"))
    weight_2d = distribute_tensor(torch.randn(6, 4), mesh_2d, [Replicate(), Shard(0)])
    out["mesh_2d"] = _error_of(lambda: muonlab.Muon([torch.nn.Parameter(weight_2d)]))
    out["mesh_2d_arg"] = _error_of(lambda: muonlab.Muon(torch.nn.Linear(3, 3).parameters(), distributed=mesh_2d))
    out["bad_setting"] = _error_of(lambda: muonlab.Muon(torch.nn.Linear(3, 3).parameters(), distributed="fsdp"))

    # Ranks that built different parameter lists: rank 0 has one matrix more.
    torch.manual_seed(0)
    layers = [torch.nn.Linear(4, 8, bias=False), torch.nn.Linear(8, 6, bias=False)]
    params = [layer.weight for layer in layers[: 2 if rank == 0 else 1]]
    optimizer = muonlab.Muon(params, lr=0.01)

    def step():
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()

    out["disagree"] = _error_of(step)
    # ...and the process group still works afterwards (no collective left half-done)
    probe = torch.ones(1)
    dist.all_reduce(probe)
    out["after"] = float(probe.item())

    # A non-finite gradient on one rank's shard only: every rank skips the step, nothing changes.
    model = shard_model(make_model(), world_size)
    optimizer = make_optimizer(model)
    before = full_params(model)
    x, y = make_data(0)
    torch.nn.functional.mse_loss(model(x), y).backward()
    if rank == world_size - 1:
        model.h1.weight.grad.to_local().fill_(float("nan"))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.step()
    out["nan_warned"] = any("non-finite" in str(w.message) for w in caught)
    out["nan_unchanged"] = all(torch.equal(before[k], v) for k, v in full_params(model).items())
    out["nan_no_state"] = len(optimizer.state) == 0
    return out


def comm_volume_scenario(rank: int, world_size: int) -> dict:
    """Bytes every collective moved in one FSDP2 step (forward, backward, optimizer): AdamW vs Muon."""
    from muonlab.distributed.measure import CollectiveCounter

    out = {}
    for kind in ("adamw", "muon", "muon_bf16"):
        model = shard_model(make_model(), world_size)
        optimizer = make_optimizer(model, kind)
        train(model, optimizer, range(1), rank, world_size)  # warm-up: lazy state, first-step checks
        if kind != "adamw":
            optimizer._distribution.stats.reset()
        x, y = make_data(1)
        per = BATCH // world_size
        with CollectiveCounter(world_size, rank) as counter:
            torch.nn.functional.mse_loss(model(x[rank * per : (rank + 1) * per]), y[rank * per : (rank + 1) * per]).backward()
            with CollectiveCounter(world_size, rank) as step_counter:
                optimizer.step()
        out[kind] = {"total": counter.bytes_sent, "step": step_counter.bytes_sent, "by_op": dict(counter.by_op)}
        out[f"{kind}_params"] = full_params(model)  # after 2 steps
        if kind == "muon":
            out["muon_stats_step"] = optimizer._distribution.stats.per_op
    return out


def trainer_scenario(rank: int, world_size: int) -> dict:
    """``muonlab train --parallel ddp|fsdp`` (the train() it calls) vs one process on the full batch,
    and an FSDP run stopped by Ctrl-C on rank 0 only, then resumed from its DCP checkpoint."""
    import os
    import signal
    import tempfile
    from pathlib import Path

    from muonlab.tasks.lm.train import TrainConfig, train

    names = [tempfile.mkdtemp(prefix="muonlab-train-") if rank == 0 else None]
    dist.broadcast_object_list(names, src=0)
    root = Path(names[0])
    if rank == 0:
        from tests.lm.conftest import write_corpus

        write_corpus(root / "corpus")
    dist.barrier()
    per_rank = 2
    base = dict(data=str(root / "corpus"), model="micro", block_size=32, steps=4, eval_every=2, eval_batches=2,
                ckpt_every=100, progress=False, seed=1, optimizer="muon", record_logits=False)

    def config(**kw):
        return TrainConfig(**dict(base, **kw))

    out: dict = {}
    if rank == 0:  # the single-process reference on the global batch
        single = train(config(batch_size=per_rank * world_size, out=str(root / "single")))
        out["single"] = single["train_losses"]
    dist.barrier()
    for kind in ("ddp", "fsdp"):
        result = train(config(batch_size=per_rank, parallel=kind, out=str(root / kind)))
        out[kind] = result["train_losses"]
        out[f"{kind}_val"] = result["val_losses"]
        out[f"{kind}_files"] = sorted(os.listdir(root / kind)) if rank == 0 else []

    def ctrl_c_on_rank0(step, loss):
        if step == 2 and rank == 0:
            os.kill(os.getpid(), signal.SIGINT)

    part = train(config(batch_size=per_rank, parallel="fsdp", out=str(root / "part")), on_step=ctrl_c_on_rank0)
    out["part_interrupted"], out["part_steps"] = part["interrupted"], part["steps_done"]
    resumed = train(config(batch_size=per_rank, parallel="fsdp", out=str(root / "part"), resume=True))
    out["resumed"] = resumed["train_losses"]
    out["resumed_val"] = resumed["val_losses"]
    dist.barrier()
    if rank == 0:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return out


def family_scenario(rank: int, world_size: int) -> dict:
    """The other spectral optimizers under FSDP2, 2 steps each (compared with one process by the test).

    In float64: Adam-normalized inputs (m / (sqrt(v) + eps)) amplify the fp32 rounding of the gradient
    reduction on near-zero gradients, which would hide the distribution logic behind fp32 conditioning."""
    out = {}
    for kind in OTHER_OPTIMIZERS:
        model = shard_model(make_model().double(), world_size)
        train(model, make_optimizer(model, kind), range(2), rank, world_size)
        out[kind] = full_params(model)
    return out


STATE_DTYPES = ("bfloat16", "int8")


def _whole_state(optimizer, param) -> dict:
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in optimizer.state[param].items()}


def state_dtype_scenario(rank: int, world_size: int) -> dict:
    """bf16 / int8 optimizer state under FSDP2 (float64 parameters, so that the gradient reduction's rounding does
    not move a quantization code): 3 steps against one process; the state's types and global shapes; a DCP save
    after 2 steps resumed in fresh sharded objects, and resumed unsharded (a resharded resume: every rank loads the
    whole state into a plain model and continues alone)."""
    import os
    import tempfile

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    out = {}
    for fmt in STATE_DTYPES:
        model = shard_model(make_model().double(), world_size)
        optimizer = make_optimizer(model, state_dtype=fmt)
        train(model, optimizer, range(STEPS), rank, world_size)
        h1 = optimizer.state[model.h1.weight]
        out[f"{fmt}_params"] = full_params(model)
        out[f"{fmt}_state_types"] = sorted({type(v).__name__ for v in h1.values() if torch.is_tensor(v)})
        out[f"{fmt}_state_shapes"] = {k: tuple(v.shape) for k, v in h1.items() if torch.is_tensor(v)}
        out[f"{fmt}_h1_state"] = _whole_state(optimizer, model.h1.weight)

        model = shard_model(make_model().double(), world_size)
        optimizer = make_optimizer(model, state_dtype=fmt)
        train(model, optimizer, range(2), rank, world_size)
        names = [tempfile.mkdtemp(prefix="muonlab-dcp-lowp-") if rank == 0 else None]
        dist.broadcast_object_list(names, src=0)
        path = os.path.join(names[0], "step2")
        model_sd, optim_sd = get_state_dict(model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
        train(model, optimizer, range(2, 4), rank, world_size)
        out[f"{fmt}_uninterrupted"] = full_params(model)
        out[f"{fmt}_uninterrupted_state"] = _whole_state(optimizer, model.h1.weight)

        torch.manual_seed(123)
        resumed = shard_model(TinyNet().double(), world_size)
        resumed_opt = make_optimizer(resumed, state_dtype=fmt)
        model_sd, optim_sd = get_state_dict(resumed, resumed_opt)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(resumed, resumed_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        train(resumed, resumed_opt, range(2, 4), rank, world_size)
        out[f"{fmt}_resumed"] = full_params(resumed)
        out[f"{fmt}_resumed_state"] = _whole_state(resumed_opt, resumed.h1.weight)

        torch.manual_seed(123)
        alone = TinyNet().double()
        alone_opt = make_optimizer(alone, state_dtype=fmt, distributed="none")
        model_sd, optim_sd = get_state_dict(alone, alone_opt)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(alone, alone_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        train(alone, alone_opt, range(2, 4))
        out[f"{fmt}_unsharded_resume"] = full_params(alone)
        dist.barrier()
        if rank == 0:
            import shutil

            shutil.rmtree(names[0], ignore_errors=True)
    return out



def _ddp_groups(model: TinyNet) -> list[dict]:
    """Muon's matrices, an AdamW part with a matrix in it (``inp.weight``: int8 quantizes ≥ 2-D state only) and
    the vectors, in a fixed order (the parameters' indices key the stochastic rounding)."""
    return [
        {"params": [model.inp.weight], "kind": "embedding"},
        {"params": [model.h1.weight, model.h2.weight, model.mix, model.out.weight], "kind": "matrix"},
        {"params": [model.inp.bias, model.out.bias, model.gain], "kind": "vector"},
    ]


def _ddp_optimizer(model: TinyNet, fmt: str, distributed="auto"):
    import muonlab

    return muonlab.Muon(_ddp_groups(model), lr=0.05, weight_decay=0.1, adamw_lr=0.01, adamw_weight_decay=0.1,
                        state_dtype=fmt, rounding_seed=7, distributed=distributed)


def _all_state(optimizer, model: TinyNet) -> dict:
    return {name: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state[p].items()}
            for name, p in model.named_parameters()}


def _global_batch_gradients(model: TinyNet, step: int, world_size: int) -> None:
    """The gradient DDP gives on ``world_size`` ranks, in one process: each rank's slice's mean-loss gradient, divided
    by the world size, summed in rank order (the all-reduce's sum; exact for two ranks, where it is one addition)."""
    x, y = make_data(step)
    per_rank = BATCH // world_size
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for r in range(world_size):
        rows = slice(r * per_rank, (r + 1) * per_rank)
        loss = torch.nn.functional.mse_loss(model(x[rows]), y[rows])
        for t, g in zip(total, torch.autograd.grad(loss, params)):
            t.add_(g / world_size)
    for p, t in zip(params, total):
        p.grad = t


def ddp_state_dtype_scenario(rank: int, world_size: int) -> dict:
    """bf16 / int8 state (Muon and its AdamW part) under DDP (replicated parameters, gradient all-reduce, Muon's
    matrix work split across ranks): 3 steps against one process on the global batch (computed on this rank, so
    that both use one thread and the same kernels); the whole state of every rank (the test compares them); a
    state_dict saved after 2 steps and resumed in fresh objects against the uninterrupted run."""
    import copy

    from torch.nn.parallel import DistributedDataParallel

    out = {}
    for fmt in STATE_DTYPES:
        model = make_model()
        optimizer = _ddp_optimizer(model, fmt)
        ddp = DistributedDataParallel(model)
        train(ddp, optimizer, range(2), rank, world_size)
        saved_params = full_params(model)
        saved_state = copy.deepcopy(optimizer.state_dict())
        # a fresh wrapper here too: DDP lays out its gradient buckets again after a wrapper's first step, and on 3+
        # ranks the all-reduce's sum order follows the layout; the resumed run below starts a wrapper at step 2
        ddp = DistributedDataParallel(model)
        train(ddp, optimizer, range(2, STEPS), rank, world_size)
        out[f"{fmt}_params"] = full_params(model)
        out[f"{fmt}_state"] = _all_state(optimizer, model)
        out[f"{fmt}_matrices_owned"] = optimizer._distribution.stats.matrices

        alone = make_model()
        alone_opt = _ddp_optimizer(alone, fmt, distributed="none")
        for step in range(STEPS):
            _global_batch_gradients(alone, step, world_size)
            alone_opt.step()
            alone_opt.zero_grad(set_to_none=True)
        out[f"{fmt}_one_process"] = full_params(alone)
        out[f"{fmt}_one_process_state"] = _all_state(alone_opt, alone)

        torch.manual_seed(123)  # the fresh model starts elsewhere: only the checkpoint can make it equal
        resumed = TinyNet()
        with torch.no_grad():
            for name, p in resumed.named_parameters():
                p.copy_(saved_params[name])
        resumed_opt = _ddp_optimizer(resumed, fmt)
        resumed_opt.load_state_dict(saved_state)
        train(DistributedDataParallel(resumed), resumed_opt, range(2, STEPS), rank, world_size)
        out[f"{fmt}_resumed"] = full_params(resumed)
        out[f"{fmt}_resumed_state"] = _all_state(resumed_opt, resumed)
    return out


SCENARIOS = {
    "comm": comm_scenario,
    "ddp": ddp_scenario,
    "fsdp": fsdp_scenario,
    "checkpoint": checkpoint_scenario,
    "bad_input": bad_input_scenario,
    "comm_volume": comm_volume_scenario,
    "trainer": trainer_scenario,
    "family": family_scenario,
    "state_dtype": state_dtype_scenario,
    "ddp_state_dtype": ddp_state_dtype_scenario,
}
