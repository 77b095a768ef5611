import math

import pytest
import torch

from muonlab.tasks.lm.model import GPT, GPTConfig, preset_config


def small(attention="mha", **kw):
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, attention=attention, **kw))


@pytest.mark.parametrize("attention", ["mha", "gqa", "mla"])
@pytest.mark.parametrize("tied", [True, False])
def test_shapes_and_loss(attention, tied):
    model = small(attention, tie_embeddings=tied)
    x, y = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    logits, loss = model(x, y)
    assert logits.shape == (3, 16, 50)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    # fresh model predicts roughly uniformly: loss near log(vocab)
    assert abs(loss.item() - math.log(50)) < 0.5
    assert (model.lm_head.weight is model.wte.weight) == tied
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_gqa_has_fewer_key_heads_and_mla_shares_one_rotary_key():
    gqa = small("gqa", n_kv_head=2)
    assert gqa.blocks[0].attn.wk.weight.shape == (2 * 8, 32)
    mla = small("mla")
    attn = mla.blocks[0].attn
    assert attn.wk_r.weight.shape[0] == attn.d_rope          # one rotary key for all heads
    assert attn.wq_r.weight.shape[0] == 4 * attn.d_rope      # a rotary query per head


@pytest.mark.parametrize("attention", ["mha", "gqa", "mla"])
def test_causal_future_tokens_do_not_change_the_past(attention):
    model = small(attention).eval()
    x = torch.randint(0, 50, (2, 16))
    y = x.clone()
    y[:, 10:] = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(y)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@torch.no_grad()
def _reference_max_logits_mha(attn, x):
    """Brute force: explicit q, k, RoPE, causal mask, max per head."""
    B, T, _ = x.shape
    H, d = attn.n_head, attn.head_dim
    q = attn.rotary((x @ attn.wq.weight.T).view(B, T, H, d).transpose(1, 2))
    k = attn.rotary((x @ attn.wk.weight.T).view(B, T, attn.n_kv_head, d).transpose(1, 2))
    k = k.repeat_interleave(H // attn.n_kv_head, dim=1)
    out = torch.empty(H)
    for h in range(H):
        best = -math.inf
        for b in range(B):
            for i in range(T):
                for j in range(i + 1):
                    best = max(best, float(q[b, h, i] @ k[b, h, j]) / math.sqrt(d))
        out[h] = best
    return out


@pytest.mark.parametrize("attention", ["mha", "gqa"])
def test_recorded_max_logits_match_brute_force(attention):
    model = small(attention)
    attn = model.blocks[0].attn
    x = torch.randn(2, 8, 32)
    attn.record_max_logits = True
    with torch.no_grad():
        attn(x)
    ref = _reference_max_logits_mha(attn, x)
    torch.testing.assert_close(attn.max_logits, ref, rtol=1e-5, atol=1e-5)


def test_mla_max_logit_is_compressed_plus_rotary_term():
    model = small("mla")
    a = model.blocks[0].attn
    x = torch.randn(2, 8, 32)
    a.record_max_logits = True
    with torch.no_grad():
        a(x)
        B, T = 2, 8
        c_q, c_kv = a.q_norm(a.wq_down(x)), a.kv_norm(a.wkv_down(x))
        q_c = (c_q @ a.wq_c.weight.T).view(B, T, 4, a.d_nope).transpose(1, 2)
        q_r = a.rotary((c_q @ a.wq_r.weight.T).view(B, T, 4, a.d_rope).transpose(1, 2))
        k_c = (c_kv @ a.wk_c.weight.T).view(B, T, 4, a.d_nope).transpose(1, 2)
        k_r = a.rotary((x @ a.wk_r.weight.T).view(B, T, 1, a.d_rope).transpose(1, 2))
        s = (q_c @ k_c.transpose(-1, -2) + q_r @ k_r.transpose(-1, -2)) / math.sqrt(a.d_nope + a.d_rope)
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
    torch.testing.assert_close(a.max_logits, s.amax(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["mha", "mla"])
def test_recording_does_not_change_the_forward(attention):
    model = small(attention)
    x = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        a, _ = model(x)
        model.set_record_max_logits(True)
        b, _ = model(x)
    assert torch.equal(a, b)
    assert model.max_logits().shape == (2, 4)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="attention"):
        GPTConfig(attention="linear").resolved()
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4).resolved()
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(attention="gqa", n_head=4, n_kv_head=3).resolved()
    with pytest.raises(ValueError, match="unknown model"):
        preset_config("huge")
    model = small()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_gpt2_preset_has_124m_parameters():
    cfg = preset_config("gpt2", vocab_size=50257)
    with torch.device("meta"):
        model = GPT(cfg)
    n = sum(p.numel() for p in model.parameters())
    # GPT-2 small: 124M with learned position embeddings; RoPE drops those 0.8M
    assert 123e6 < n < 125e6
