"""GAS's GCN-guided module (GGM): a graph convolutional network that passes information from each
cell's architecture parameters to the next cell's, used only during the search.

The exact form (the paper, as summarised for this project, leaves it open; no public code exists).
Cell k has α_k ∈ R^{E×K} (E candidate edges, K operators). Its E candidate edges are the graph's
nodes for that cell, with features X̃_k = α_k − mean_row(α_k): each edge's operator logits, centred
(each row sums to 0, and a cell with no preference has X̃ = 0). For every pair of adjacent cells (k−1, k), k ≥ 1:

    A_k  = softmax_rows( (X̃_k W_φ)(X̃_{k−1} W_ψ)ᵀ / √D )     (E×E) learned similarity adjacency:
                                                             node e of cell k ← nodes of cell k−1
    Δ_k  = tanh( A_k X̃_{k−1} W_g ) W_o                      (E×K) one graph convolution over that
                                                             graph, mapped back to operator logits
    α'_k = α_k + γ·Δ_k ,        α'_0 = α_0

W_φ, W_ψ, W_g (K×D) and W_o (D×K) have no biases and are shared by all cell pairs; γ is a fixed
setting. The supernet then runs, costs and derives every cell from softmax(α'_k).

Why this form:
- *residual on the logits*: α_k stays each cell's own parameter (cell independence is kept: the
  GGM only adds a correction), the weights stay a softmax, and γ = 0 — or no GGM at all — is
  exactly the plain cell-independent search;
- *information from cell k−1 only*, read from its own α_{k−1} (not from α'_{k−1}): each update is
  one hop along the chain of cells, as the paper describes, and gradients of cell k's losses reach
  both α_k and α_{k−1} (the "guidance") without a recursion through every earlier cell;
- *similarity adjacency*: which edge of cell k−1 informs which edge of cell k is learned from
  what the edges currently prefer, not fixed by edge position (cells of different strides play
  different roles, and a reduction cell's edges do not line up with a normal cell's);
- *centred logits as features*: they carry exactly what the softmax weights carry (softmax is
  invariant to a constant shift of a row) on the scale α itself moves on. Centred softmax weights,
  tried first, are K times smaller near uniform α and made the GGM's correction vanish (mean
  |α' − α| of 1e-5 to 1e-6 over a CamVid search, where α moved by 1e-2 and more);
- *centred features, no biases, odd activation (tanh)*: Δ_k is exactly 0 when cell k−1 prefers
  nothing. The GGM passes *preferences* of the previous cell; it cannot become a prior shared by
  every cell (a bias, or uncentred softmax rows, whose constant part acts as one), which would
  pull all cells towards the same operators and undo cell independence. It also means the GGM
  is silent while α is still uniform: pre-training is the same with it on or off;
- *its own seeded initialization* (``seed``): creating the module does not move the global RNG, so
  the supernet's weights are the same with the GGM on or off.

The module's parameters are architecture parameters: the supernet lists them in
``arch_parameters`` (``CellsSupernet.attach_guide``), so the engine's architecture optimizer trains
them on the architecture half of the data, with α.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GCNGuide(nn.Module):
    """α'_k = α_k + γ·GCN(α_{k−1}, α_k) over a list of per-cell (E, K) logits (module docstring)."""

    def __init__(self, ops: int, dim: int = 32, gamma: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.ops, self.dim, self.gamma = ops, dim, gamma
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.key = nn.Linear(ops, dim, bias=False)      # W_ψ: nodes of cell k−1, for the adjacency
            self.query = nn.Linear(ops, dim, bias=False)    # W_φ: nodes of cell k, for the adjacency
            self.conv = nn.Linear(ops, dim, bias=False)     # W_g: the graph convolution's weights
            self.out = nn.Linear(dim, ops, bias=False)      # W_o: back to operator logits

    def features(self, alpha: torch.Tensor) -> torch.Tensor:
        """X̃ = α − mean_row(α): the centred operator logits of every edge."""
        return alpha - alpha.mean(dim=-1, keepdim=True)

    def adjacency(self, prev: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """A_k (E×E): row e weighs the nodes (edges) of cell k−1 that inform edge e of cell k."""
        scores = self.query(self.features(alpha)) @ self.key(self.features(prev)).T
        return torch.softmax(scores / math.sqrt(self.dim), dim=-1)

    def update(self, prev: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Δ_k = tanh(A_k X̃_{k−1} W_g) W_o from cell k−1's logits ``prev`` and cell k's ``alpha``."""
        return self.out(torch.tanh(self.conv(self.adjacency(prev, alpha) @ self.features(prev))))

    def forward(self, alphas: list[torch.Tensor]) -> list[torch.Tensor]:
        return alphas[:1] + [a + self.gamma * self.update(p, a) for p, a in zip(alphas, alphas[1:])]
