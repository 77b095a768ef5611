"""Hugging Face Trainer: a muonlab optimizer built from the model, with muonlab's routing.

``Trainer(..., optimizer_cls_and_kwargs=muonlab.hf_optimizer(lr=0.02))``. Handed an optimizer *class*, the Trainer
would call it with its own two groups (weight decay / no weight decay) and every ≥ 2-D tensor — embeddings and the
output head included — would get the spectral update. transformers ≥ 5 also accepts a *factory* there (any first
element that is not an Optimizer subclass): it instantiates it and calls it with the model, which is what
:func:`hf_optimizer` returns. The factory puts the spectral groups first, so that the Trainer's logged
``learning_rate`` (group 0's) is the matrix part's. Tested with transformers 5.25.
"""

from __future__ import annotations

from typing import Any

from muonlab.optim import OPTIMIZERS, make_optimizer, param_groups
from muonlab.optim.routing import route

# Keyword arguments of muonlab.param_groups (routing), told apart from the optimizer's.
ROUTING_KEYS = frozenset(route.__kwdefaults__)


class HFOptimizerFactory:
    """What ``optimizer_cls_and_kwargs[0]`` must be for transformers' Trainer to build the optimizer from the model:
    the Trainer calls ``HFOptimizerFactory()(model, **kwargs)``. Use :func:`hf_optimizer` to build the pair."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            # an older Trainer calls optimizer_cls(param_groups, **kwargs) with its own groups: refuse, don't misroute
            raise TypeError(
                "HFOptimizerFactory was called as an optimizer class (with the Trainer's parameter groups): this "
                "transformers version does not support optimizer factories (transformers >= 5 does). Build the "
                "optimizer yourself: Trainer(..., optimizers=(muonlab.Muon(muonlab.param_groups(model, "
                "matrix_first=True), lr=...), None))"
            )

    def __call__(self, model, optimizer: str = "muon", **kwargs: Any):
        routing = {k: kwargs.pop(k) for k in list(kwargs) if k in ROUTING_KEYS}
        return make_optimizer(optimizer, param_groups(model, matrix_first=True, **routing), **kwargs)


def hf_optimizer(optimizer: str = "muon", **kwargs: Any) -> tuple[type, dict]:
    """``(factory, kwargs)`` for ``Trainer(optimizer_cls_and_kwargs=...)``.

    ``optimizer``: a name of :data:`muonlab.OPTIMIZERS` (``"muon"``, ``"normuon"``, …); ``kwargs``: that optimizer's
    arguments (``lr`` is the matrix part's; ``adamw_lr`` the AdamW part's) and :func:`muonlab.param_groups`'s
    (``overrides``, ``heads``, ``disable``, ``router_kind``, …). The Trainer's own ``learning_rate`` and
    ``weight_decay`` arguments do not reach it: give them here.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer name {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    return HFOptimizerFactory, {"optimizer": optimizer, **kwargs}
