"""Language-model lab: a small GPT (MHA/GQA/MLA), corpora and tokenizers, and a trainer with exact resume."""

from muonlab.tasks.lm.model import GPT, GPTConfig, PRESETS, preset_config

__all__ = ["GPT", "GPTConfig", "PRESETS", "preset_config"]
