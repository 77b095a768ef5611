"""In-context linear regression with one linear-attention layer — work A's second problem.

Prompts (x_i, y_i = wᵀx_i), i = 1..N, with x_i ~ N(0, Σ), w ~ N(0, I_d), and a query x_q. With h = (1/N) Σ_i y_i x_i = Σ̂ w
(Σ̂ = (1/N) Σ_i x_i x_iᵀ), the reduced parameterization of one linear-attention layer predicts ŷ = x_qᵀ Γ h.

Population loss (closed form, Gaussian fourth moments E[x xᵀ B x xᵀ] = 2ΣBΣ + tr(BΣ)Σ for symmetric B):

    L(Γ) = ½ E (x_qᵀ Γ Σ̂ w − x_qᵀ w)² = ½ tr(Σ Γ M Γᵀ) − tr(Σ Γ Σ) + ½ tr Σ,   M = E[Σ̂²] = Σ² + (Σ² + tr(Σ) Σ)/N,
    ∇L(Γ) = Σ (Γ M − Σ),   Γ* = Σ M⁻¹ → Σ⁻¹ as N → ∞ (N = None means N = ∞).

In Σ's eigenbasis (eigenvalues λ_i) Γ = Q diag(g) Qᵀ stays diagonal from Γ₀ = 0, and ∇L = Q diag(λ_i(g_i m_i − λ_i)) Qᵀ:
simplified Muon moves every g_i by the same ±η (κ-free contraction), while the distance to g_i* = λ_i/m_i ≈ 1/λ_i is up to κ.
GD's rate in direction i is η λ_i m_i ≈ η λ_i³.

The *full* parameterization (tokens z = (x, y) ∈ ℝ^{d+1}, query z_q = (x_q, 0)) predicts
ŷ = e_{d+1}ᵀ W_PV · (1/N) Σ_i z_i z_iᵀ · W_KQ z_q; it contains the reduced one (Γ = p_y K_xxᵀ with p = W_PV's last row,
K_xx = W_KQ[:d, :d]). Its loss is a large-batch Monte-Carlo loss (autograd gradients).
(Design ours, after the abstract of Ma, Huang, Chi, Chen, arXiv 2601.13474; the reduction follows Zhang, Frei, Bartlett 2023.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from muonlab.tasks.matfac import log_spectrum, random_orthonormal


@dataclass
class ICLRegression:
    """Population loss of the reduced parameterization ŷ = x_qᵀ Γ h."""

    sigma: torch.Tensor  # d×d covariance of x
    n_context: int | None = None  # N; None = infinite context
    eigvals: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        s = self.sigma
        self.eigvals, self.eigvecs = torch.linalg.eigh(s)
        self.dim = s.shape[0]
        self.m = s @ s
        if self.n_context is not None:
            self.m = self.m + (s @ s + torch.trace(s) * s) / self.n_context
        self.sigma_sq = s @ s
        self.gamma_star = torch.linalg.solve(self.m, s).mT  # Σ M⁻¹ (M, Σ commute and are symmetric)
        self.loss_zero = 0.5 * float(torch.trace(s))
        self.loss_star = self.loss(self.gamma_star)

    @property
    def kappa(self) -> float:
        return float(self.eigvals.max() / self.eigvals.min())

    def start(self) -> list[torch.Tensor]:
        """Γ₀ = 0."""
        return [torch.zeros_like(self.sigma)]

    def loss(self, gamma: torch.Tensor) -> float:
        s = self.sigma
        return float(0.5 * torch.trace(s @ gamma @ self.m @ gamma.mT) - torch.trace(s @ gamma @ s) + 0.5 * torch.trace(s))

    def loss_and_grads(self, params: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        gamma = params[0]
        gm = gamma @ self.m
        s = self.sigma
        loss = float(0.5 * (s * (gm @ gamma.mT)).sum() - (s * (gamma @ s)).sum()) + self.loss_zero
        return loss, [s @ gm - self.sigma_sq]

    def excess(self, loss: float) -> float:
        """(L − L*) / (L(0) − L*): the relative excess loss compared with the tolerance."""
        return max(loss - self.loss_star, 0.0) / (self.loss_zero - self.loss_star)

    def error(self, params: list[torch.Tensor]) -> float:
        return self.excess(self.loss(params[0]))

    def error_from_loss(self, loss: float) -> float:
        return self.excess(loss)

    def eigen_coordinates(self, gamma: torch.Tensor) -> torch.Tensor:
        """g_i = q_iᵀ Γ q_i in Σ's eigenbasis (ascending λ): the scalar sequences that decouple."""
        return torch.diagonal(self.eigvecs.mT @ gamma @ self.eigvecs)

    def singular_trajectory_values(self, params: list[torch.Tensor]) -> torch.Tensor:
        return self.eigen_coordinates(params[0])

    def trajectory_targets(self) -> torch.Tensor:
        """g_i* = q_iᵀ Γ* q_i, the fixed points of the scalar sequences."""
        return self.eigen_coordinates(self.gamma_star)


def make_icl(
    kappa: float,
    *,
    dim: int = 10,
    n_context: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> ICLRegression:
    """Σ = Q diag(λ) Qᵀ with λ log-spaced over [1/κ, 1] and a random rotation Q."""
    if not kappa >= 1.0:
        raise ValueError(f"kappa must be ≥ 1, got {kappa}")
    if n_context is not None and n_context < 1:
        raise ValueError(f"n_context must be ≥ 1 or None, got {n_context}")
    gen = torch.Generator().manual_seed(seed)
    q = random_orthonormal(dim, dim, gen, dtype)
    lam = log_spectrum(dim, kappa, dtype)
    return ICLRegression((q * lam) @ q.mT, n_context)


# ---- the full parameterization (W_KQ, W_PV), large-batch loss ------------------------------------------------


@dataclass
class ICLPrompts:
    """A fixed batch of prompts: xs (B, N, d), ys (B, N), x_query (B, d), y_query (B,)."""

    xs: torch.Tensor
    ys: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor


def sample_prompts(sigma: torch.Tensor, batch: int, n_context: int, generator: torch.Generator) -> ICLPrompts:
    d = sigma.shape[0]
    chol = torch.linalg.cholesky(sigma)
    dtype = sigma.dtype
    x = torch.randn(batch, n_context + 1, d, dtype=dtype, generator=generator) @ chol.mT
    w = torch.randn(batch, d, dtype=dtype, generator=generator)
    y = (x @ w.unsqueeze(-1)).squeeze(-1)
    return ICLPrompts(x[:, :-1], y[:, :-1], x[:, -1], y[:, -1])


def full_predict(w_kq: torch.Tensor, w_pv: torch.Tensor, prompts: ICLPrompts) -> torch.Tensor:
    """ŷ = e_{d+1}ᵀ W_PV · (1/N) Σ_i z_i z_iᵀ · W_KQ z_q, z_i = (x_i, y_i), z_q = (x_q, 0)."""
    z = torch.cat([prompts.xs, prompts.ys.unsqueeze(-1)], dim=-1)  # (B, N, d+1)
    zq = torch.cat([prompts.x_query, torch.zeros_like(prompts.y_query).unsqueeze(-1)], dim=-1)  # (B, d+1)
    n = z.shape[1]
    keys = z @ (w_kq @ zq.unsqueeze(-1))  # (B, N, 1): z_iᵀ W_KQ z_q
    values = z @ w_pv[-1]  # (B, N): e_{d+1}ᵀ W_PV z_i
    return (values.unsqueeze(-1) * keys).sum(dim=1).squeeze(-1) / n


def reduced_predict(gamma: torch.Tensor, prompts: ICLPrompts) -> torch.Tensor:
    """ŷ = x_qᵀ Γ h with h = (1/N) Σ_i y_i x_i."""
    h = (prompts.ys.unsqueeze(-1) * prompts.xs).mean(dim=1)
    return (prompts.x_query @ gamma * h).sum(-1)


def full_from_gamma(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W_KQ, W_PV whose prediction equals the reduced model's with Γ (W_PV's last row = e_{d+1}, K_xx = Γᵀ)."""
    d = gamma.shape[0]
    w_kq = torch.zeros(d + 1, d + 1, dtype=gamma.dtype)
    w_kq[:d, :d] = gamma.mT
    w_pv = torch.zeros(d + 1, d + 1, dtype=gamma.dtype)
    w_pv[-1, -1] = 1.0
    return w_kq, w_pv


@dataclass
class ICLFullParameterization:
    """Large-batch loss ½ mean (ŷ − y_q)² of the full (W_KQ, W_PV) layer; gradients by autograd."""

    prompts: ICLPrompts
    init_scale: float = 1e-2

    def start(self, generator: torch.Generator) -> list[torch.Tensor]:
        d1 = self.prompts.xs.shape[-1] + 1
        dtype = self.prompts.xs.dtype
        return [self.init_scale * torch.randn(d1, d1, dtype=dtype, generator=generator) for _ in range(2)]

    def loss_tensor(self, params: list[torch.Tensor]) -> torch.Tensor:
        pred = full_predict(params[0], params[1], self.prompts)
        return 0.5 * (pred - self.prompts.y_query).square().mean()

    def loss_and_grads(self, params: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        leaves = [p.detach().requires_grad_(True) for p in params]
        with torch.enable_grad():
            loss = self.loss_tensor(leaves)
            grads = torch.autograd.grad(loss, leaves)
        return float(loss.detach()), list(grads)


def make_icl_full(
    kappa: float, *, dim: int = 5, n_context: int = 20, batch: int = 4096, seed: int = 0, dtype=torch.float64
) -> ICLFullParameterization:
    task = make_icl(kappa, dim=dim, n_context=n_context, seed=seed, dtype=dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    return ICLFullParameterization(sample_prompts(task.sigma, batch, n_context, gen))
