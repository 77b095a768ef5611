"""Tiny models of real architectures, built from transformers configs (no downloads), and the routing table the zoo
test checks them against (tests/optim/zoo_routing.json).

Regenerate the table after a deliberate routing change, then READ the diff (docs/routing.md says what each rule
should do; a changed row is a changed training run for users of that architecture):

    PYTHONPATH=src python -m tests.optim.zoo_models --write && git diff tests/optim/zoo_routing.json

``--markdown`` prints the table as docs/routing.md shows it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

TABLE = Path(__file__).with_name("zoo_routing.json")

# width 16, 1–2 layers: large enough that no hidden matrix is degenerate (every side ≥ 4), small enough to build in
# milliseconds; vision models take 32×32 images in 8×8 patches.
_VISION = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32)
_TEXT = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
             max_position_embeddings=16)
_SEQ2SEQ = dict(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, pad_token_id=0, bos_token_id=1,
                eos_token_id=2, decoder_start_token_id=1)


def _builders() -> dict[str, Callable]:
    import transformers as T

    lm = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=4,
              num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return {
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                                       bos_token_id=1, eos_token_id=2)),
        "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**lm)),
        "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(**lm, num_local_experts=4, num_experts_per_tok=2)),
        "qwen2_moe": lambda: T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(
            **lm, moe_intermediate_size=8, shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2)),
        "deepseek_v3": lambda: T.DeepseekV3ForCausalLM(T.DeepseekV3Config(
            **{**lm, "num_hidden_layers": 2, "num_key_value_heads": 4}, moe_intermediate_size=8,
            first_k_dense_replace=1, n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
            q_lora_rank=8, kv_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=4, n_shared_experts=1)),
        "bert": lambda: T.BertForPreTraining(T.BertConfig(**{**_TEXT, "max_position_embeddings": 32})),
        "roberta": lambda: T.RobertaForSequenceClassification(T.RobertaConfig(
            **{**_TEXT, "max_position_embeddings": 34}, num_labels=3)),
        "t5": lambda: T.T5ForConditionalGeneration(T.T5Config(
            vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, relative_attention_num_buckets=8,
            decoder_start_token_id=0)),
        "bart": lambda: T.BartForConditionalGeneration(T.BartConfig(**_SEQ2SEQ, max_position_embeddings=32)),
        "whisper": lambda: T.WhisperForConditionalGeneration(T.WhisperConfig(
            **_SEQ2SEQ, num_mel_bins=8, max_source_positions=16, max_target_positions=16)),
        "vit": lambda: T.ViTForImageClassification(T.ViTConfig(**_VISION, num_labels=5)),
        "dinov2_registers": lambda: T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(
            **_VISION, num_register_tokens=2)),
        "convnext": lambda: T.ConvNextForImageClassification(T.ConvNextConfig(
            num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=5, patch_size=2)),
        "resnet": lambda: T.ResNetForImageClassification(T.ResNetConfig(
            num_channels=3, embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck",
            num_labels=5)),
        "swin": lambda: T.SwinForImageClassification(T.SwinConfig(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=2, num_labels=5)),
        "clip": lambda: T.CLIPModel(T.CLIPConfig(text_config=_TEXT, vision_config=_VISION, projection_dim=8)),
        "siglip": lambda: T.SiglipModel(T.SiglipConfig(text_config=_TEXT, vision_config=_VISION)),
    }


def build(name: str):
    import torch

    torch.manual_seed(0)
    return _builders()[name]()


def names() -> list[str]:
    return list(json.loads(TABLE.read_text())) if TABLE.exists() else []


def routing_rows(model) -> dict[str, list]:
    """parameter → [shape, kind, criteria, options] as the table stores it."""
    from muonlab.optim import route

    rows = {}
    for r in route(model):
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(r.options.items())}
        rows[r.name] = ["×".join(map(str, r.param.shape)), r.kind, "+".join(r.criteria), options]
    return rows


def table() -> dict[str, dict[str, list]]:
    return {name: routing_rows(build(name)) for name in _builders()}


def dumps(data: dict[str, dict[str, list]]) -> str:
    """JSON with one line per parameter (a reviewable diff)."""
    archs = []
    for arch, rows in data.items():
        body = ",\n".join(f"  {json.dumps(name)}: {json.dumps(row, ensure_ascii=False)}" for name, row in rows.items())
        archs.append(f" {json.dumps(arch)}: {{\n{body}\n }}")
    return "{\n" + ",\n".join(archs) + "\n}\n"


def markdown(data: dict[str, dict[str, list]]) -> str:
    """The table as docs/routing.md shows it: per architecture, how many parameters each criterion decided, then every
    row that is not a plain default (a 1-D ``vector`` or a 2-D hidden ``matrix``)."""
    lines = []
    for arch, rows in data.items():
        counts: dict[str, int] = {}
        for _, _, criteria, _ in rows.values():
            counts[criteria] = counts.get(criteria, 0) + 1
        summary = ", ".join(f"{c} {n}" for c, n in counts.items())
        lines += [f"### {arch}", "", f"{len(rows)} parameters: {summary}.", ""]
        special = {n: r for n, r in rows.items() if r[2] not in ("vector", "matrix")}
        if special:
            lines += ["| parameter | shape | kind | criteria | options |", "|---|---|---|---|---|"]
            for name, (shape, kind, criteria, options) in special.items():
                opts = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in options.items())
                lines.append(f"| `{name}` | {shape} | {kind} | {criteria} | {opts} |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {TABLE.name}")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    data = table()
    if args.write:
        TABLE.write_text(dumps(data))
    if args.markdown:
        print(markdown(data))
    if not (args.write or args.markdown):
        print(json.dumps(data, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
