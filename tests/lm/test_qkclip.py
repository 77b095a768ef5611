import pytest
import torch

from muonlab.optim.qkclip import QKClip
from muonlab.tasks.lm.model import GPT, GPTConfig


def make(attention, **kw):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=4, n_embd=32, attention=attention, **kw))
    # blow up the logits of heads 0 and 2 only (rows of W_q / q_C), so that some heads exceed τ and others do not
    with torch.no_grad():
        for block in model.blocks:
            a = block.attn
            w = a.wq.weight if attention != "mla" else a.wq_c.weight
            d = w.shape[0] // 4
            for h in (0, 2):
                w[h * d:(h + 1) * d] *= 60.0
            if attention == "mla":
                a.wq_r.weight[0:a.d_rope] *= 60.0
                a.wk_c.weight.mul_(5.0)
            else:
                a.wk.weight.mul_(5.0)
    return model


def all_max_logits(model, x):
    model.set_record_max_logits(True)
    with torch.no_grad():
        model(x)
    model.set_record_max_logits(False)
    return model.max_logits()


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def pick_tau(before):
    """A τ below the blown-up heads and above the healthy ones."""
    return 0.6 * float(before.max())


@pytest.mark.parametrize("attention", ["mha", "gqa", "mla"])
def test_clipped_step_bounds_every_head_on_the_same_batch(attention):
    model = make(attention)
    x = torch.randint(0, 40, (4, 16))
    before = all_max_logits(model, x)
    tau = pick_tau(before)
    assert (before > tau).any() and (before < tau).any()
    clip = QKClip(model, tau)
    reported = clip.step(lambda: model(x))
    after = all_max_logits(model, x)
    assert (after <= tau * (1 + 1e-5)).all(), (after, tau)
    torch.testing.assert_close(reported, after, rtol=1e-5, atol=1e-5)
    # clipped heads land on τ (logit scaled by exactly γ), not far below it
    clipped_first_layer = before[0] > tau
    torch.testing.assert_close(after[0][clipped_first_layer],
                               torch.full_like(after[0][clipped_first_layer], tau), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attention", ["mha", "gqa", "mla"])
def test_heads_under_tau_and_the_shared_rotary_key_are_bitwise_unchanged(attention):
    model = make(attention)
    x = torch.randint(0, 40, (4, 16))
    before_logits = all_max_logits(model, x)
    tau = pick_tau(before_logits)
    w0 = snapshot(model)
    clip = QKClip(model, tau)
    clip.step(lambda: model(x))
    for li, block in enumerate(model.blocks):
        a = block.attn
        prefix = f"blocks.{li}.attn."
        gamma = clip.last_gamma[li]
        healthy = (gamma == 1.0).nonzero().flatten().tolist()
        if attention == "mla":
            assert torch.equal(a.wk_r.weight, w0[prefix + "wk_r.weight"])  # k_R never touched
            names = {"wq_c.weight": a.d_nope, "wk_c.weight": a.d_nope, "wq_r.weight": a.d_rope}
        elif attention == "gqa":
            assert torch.equal(a.wk.weight, w0[prefix + "wk.weight"])      # shared key heads untouched
            names = {"wq.weight": a.head_dim}
        else:
            names = {"wq.weight": a.head_dim, "wk.weight": a.head_dim}
        for name, d in names.items():
            new, old = dict(model.named_parameters())[prefix + name], w0[prefix + name]
            for h in healthy:
                assert torch.equal(new[h * d:(h + 1) * d], old[h * d:(h + 1) * d]), (name, h)
        # values, output and everything else never change
        assert torch.equal(a.wv.weight, w0[prefix + "wv.weight"])
        assert torch.equal(a.wo.weight, w0[prefix + "wo.weight"])


def test_mla_scaling_powers_are_sqrt_gamma_for_compressed_and_gamma_for_rotary_query():
    model = make("mla")
    x = torch.randint(0, 40, (4, 16))
    tau = pick_tau(all_max_logits(model, x))
    w0 = snapshot(model)
    clip = QKClip(model, tau)
    clip.step(lambda: model(x))
    a = model.blocks[0].attn
    gamma = clip.last_gamma[0]
    h = int(gamma.argmin())
    g = float(gamma[h])
    assert g < 1.0
    rows_c, rows_r = slice(h * a.d_nope, (h + 1) * a.d_nope), slice(h * a.d_rope, (h + 1) * a.d_rope)
    torch.testing.assert_close(a.wq_c.weight[rows_c], w0["blocks.0.attn.wq_c.weight"][rows_c] * g ** 0.5)
    torch.testing.assert_close(a.wk_c.weight[rows_c], w0["blocks.0.attn.wk_c.weight"][rows_c] * g ** 0.5)
    torch.testing.assert_close(a.wq_r.weight[rows_r], w0["blocks.0.attn.wq_r.weight"][rows_r] * g)


def test_cheap_mode_uses_recorded_logits_and_scales_by_gamma():
    model = make("mha")
    x = torch.randint(0, 40, (4, 16))
    before = all_max_logits(model, x)
    tau = pick_tau(before)
    clip = QKClip(model, tau)
    reported = clip.step()  # recorded logits of the last forward
    torch.testing.assert_close(reported, torch.minimum(before, torch.tensor(tau)), rtol=1e-6, atol=1e-6)
    # first layer's input is unchanged by clipping, so its heads are now exactly bounded
    assert (all_max_logits(model, x)[0] <= tau * (1 + 1e-5)).all()


def test_bad_use_is_refused():
    with pytest.raises(ValueError, match="tau"):
        QKClip(make("mha"), tau=-1.0)
    with pytest.raises(ValueError, match="QK-norm"):
        QKClip(GPT(GPTConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16, qk_norm=True)), 10.0)
    with pytest.raises(ValueError, match="no attention module"):
        QKClip(torch.nn.Linear(3, 3), 10.0)
