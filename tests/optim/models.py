"""A small real model for the optimizer tests: embedding, conv, norm, hidden and head linears."""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 40


class TinyNet(nn.Module):
    def __init__(self, vocab: int = VOCAB, dim: int = 16, tie: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)
        self.hidden = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        if tie:
            self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens)
        h = h + torch.relu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        h = h + self.proj(torch.relu(self.hidden(self.norm(h))))
        return self.head(h)


def task(batch: int = 32, length: int = 10, generator_seed: int = 0):
    """Next-token targets given by a fixed permutation of the current token."""
    gen = torch.Generator().manual_seed(generator_seed)
    tokens = torch.randint(0, VOCAB, (batch, length), generator=gen)
    perm = torch.randperm(VOCAB, generator=gen)
    return tokens, perm[tokens]


def loss_fn(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> list[float]:
    tokens, targets = task()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model, tokens, targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
