"""muonlab inside other training frameworks, without their traps (above :mod:`muonlab.optim`, below the lab).

- :func:`hf_optimizer`: ``Trainer(..., optimizer_cls_and_kwargs=muonlab.hf_optimizer(lr=0.02))`` — Hugging Face's
  Trainer builds a muonlab optimizer from the model with muonlab's routing (:mod:`muonlab.integrations.hf`);
- :func:`peak_lrs`: per-group peak learning rates for schedulers that take absolute peaks
  (``OneCycleLR(opt, max_lr=muonlab.peak_lrs(opt, matrix=0.02))``: the AdamW part keeps its own peak);
- :func:`is_spectral`: whether a param group gets the spectral update.

Nothing here imports transformers, accelerate or Lightning at import time (only when a factory is called).
"""

from muonlab.integrations.hf import HFOptimizerFactory, hf_optimizer
from muonlab.integrations.schedulers import is_spectral, peak_lrs

__all__ = ["HFOptimizerFactory", "hf_optimizer", "is_spectral", "peak_lrs"]
