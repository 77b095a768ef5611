"""Issue 16, part 3: is the MLA loss cost of QK-Clip the stale re-run or the clip itself, and what does the clip do
to the rotary channel (the shared k_R is never scaled, each head's q_R takes the whole γ)?

usage: python mla_study.py EXPERIMENT_OUT   (the --out of a finished `muonlab run qk-clip`)
Runs MLA once more with the issue-16 stale behaviour simulated in fp32 (every layer's γ from one forward of the
unclipped model: layer 1 exact, later layers measured on unclipped inputs), then decomposes the final models' logits."""
import json, math, sys
from pathlib import Path

import torch

import muonlab.optim.qkclip as Q
from muonlab.tasks.lm.data import prepare_data, BatchSampler
from muonlab.tasks.lm.train import TrainConfig, train, build_model

out = Path(sys.argv[1])
res = json.loads((out / "results.json").read_text())
s, tau = res["settings"], res["results"]["mla"]["tau"]
torch.set_num_threads(1)


class StaleQKClip(Q.QKClip):
    """What the old code did under bf16 autocast: clip every layer by γ measured in one pass over the unclipped model."""

    @torch.no_grad()
    def step(self, forward=None):
        previous = [m.record_max_logits for m in self.modules]
        self.enable_recording(True)
        forward()
        for m, on in zip(self.modules, previous):
            m.record_max_logits = on
        measured = [m.max_logits.clone() for m in self.modules]
        self.last_gamma = [Q.clip_module(m, S, self.tau) for m, S in zip(self.modules, measured)]
        return torch.stack(measured)  # the old code reported these (unclipped) values


token_data = prepare_data(s["data"], "byte")
stale_dir = out / "runs" / f"mla_tau{tau:g}_stale"
cfg = TrainConfig(data=s["data"], model=s["model"], attention="mla", block_size=s.get("block_size"),
                  batch_size=s["batch_size"], steps=s["steps"], eval_every=s["eval_every"],
                  eval_batches=s["eval_batches"], optimizer=s["optimizer"], lr=res["lr"], seed=s["seed"],
                  qk_clip=tau, record_logits=True, progress=False, threads=1, ckpt_every=10**9,
                  device="cpu", out=str(stale_dir), resume=(stale_dir / "checkpoint.pt").exists())
if not (stale_dir / "results.json").exists():
    Q_orig, Q.QKClip = Q.QKClip, StaleQKClip
    try:
        train(cfg, token_data=token_data)
    finally:
        Q.QKClip = Q_orig
stale = json.loads((stale_dir / "results.json").read_text())
r = res["results"]["mla"]
print(f"MLA tau={tau:g}: final val loss  no clip {r['final_val_loss_no_clip']:.4f}  clip (exact) "
      f"{r['final_val_loss_clip']:.4f}  clip (stale, issue 16) {stale['final_val_loss']:.4f}")
print(f"  stale run: reported peak {max(stale['max_attn_logit_after_step']):.2f} (these are pre-clip values)")

# decompose the max logit of each head into the compressed (q_C·k_C) and rotary (q_R·k_R) terms
x, _ = BatchSampler(token_data.train, s["batch_size"], 128 if s["model"] == "tiny" else 64, seed=99).batch(0)
for name, d in [("no clip", "mla_noclip"), ("clip", f"mla_tau{tau:g}"), ("stale", stale_dir.name)]:
    payload = torch.load(out / "runs" / d / "checkpoint.pt", map_location="cpu", weights_only=True)
    mcfg = TrainConfig(model=s["model"], attention="mla", seed=s["seed"])
    model = build_model(mcfg, token_data.vocab_size)
    model.load_state_dict(payload["model"])
    parts = []

    def hook(a, inputs, output):
        (h_in,) = inputs
        B, T, _ = h_in.shape
        H = a.n_head
        c_q = a.q_norm(a.wq_down(h_in))
        q_c = a.wq_c(c_q).view(B, T, H, a.d_nope).transpose(1, 2)
        q_r = a.rotary(a.wq_r(c_q).view(B, T, H, a.d_rope).transpose(1, 2))
        c_kv = a.kv_norm(a.wkv_down(h_in))
        k_c = a.wk_c(c_kv).view(B, T, H, a.d_nope).transpose(1, 2)
        k_r = a.rotary(a.wk_r(h_in).view(B, T, 1, a.d_rope).transpose(1, 2))
        sc = 1 / math.sqrt(a.d_nope + a.d_rope)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        nope = (q_c @ k_c.transpose(-1, -2)) * sc
        rope = (q_r @ k_r.transpose(-1, -2)) * sc
        tot = (nope + rope).masked_fill(~mask, -torch.inf)
        flat = tot.transpose(0, 1).reshape(H, -1)
        idx = flat.argmax(dim=1)
        n_at = nope.transpose(0, 1).reshape(H, -1).gather(1, idx[:, None]).squeeze(1)
        r_at = rope.transpose(0, 1).reshape(H, -1).gather(1, idx[:, None]).squeeze(1)
        parts.append((flat.max(1).values, n_at, r_at, a.wk_r.weight.norm().item(),
                      a.wq_r.weight.view(H, a.d_rope, -1).norm(dim=(1, 2)), a.wq_c.weight.view(H, a.d_nope, -1).norm(dim=(1, 2)),
                      a.wk_c.weight.view(H, a.d_nope, -1).norm(dim=(1, 2))))

    handles = [b.attn.register_forward_hook(hook) for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    print(f"\n{name}: per layer: max logit | rotary share of each head's max logit | ‖W_KR‖ | mean per-head ‖q_R rows‖, ‖q_C rows‖, ‖k_C rows‖")
    for li, (mx, n_at, r_at, wkr, wqr, wqc, wkc) in enumerate(parts):
        share = (r_at / mx).tolist()
        print(f"  L{li}: max {mx.max():7.2f}  rope share {[round(v, 2) for v in share]}  ‖W_KR‖ {wkr:6.2f}  "
              f"‖q_R‖ {wqr.mean():5.2f}  ‖q_C‖ {wqc.mean():5.2f}  ‖k_C‖ {wkc.mean():5.2f}")
