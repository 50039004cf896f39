"""The RL strategy's controller: an LSTM that emits an architecture as a sequence of categorical
decisions (any ``segnas.spaces.base.DecisionSpace``), and the two policy-gradient learners that
train it from rewards, REINFORCE and PPO, each with an exponential-moving-average reward baseline
(Nekrasov et al., CVPR 2019, after ENAS; docs/methods/rl.md).

The controller (``LSTMController``): a learned start vector enters a stacked LSTM; at position i a
linear head of that position maps the LSTM output to ``sizes[i]`` logits, a decision is drawn from
their softmax, and the embedding of the drawn value (one embedding row per position and value) is
the next input. Because the sequence has a fixed length, the log-probability of given decision
sequences is computed for a whole batch in one LSTM call (teacher forcing), which is what PPO's
repeated passes over its buffer need.

Decisions are drawn with the strategy's numpy generator (``sample(rng)``), so a search's
proposals depend only on its seed, the controller's weights and that generator's state.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError


class LSTMController(nn.Module):
    """A policy over fixed-length decision sequences with ``sizes[i]`` choices at position ``i``."""

    def __init__(self, sizes: Sequence[int], hidden: int = 100, layers: int = 2, seed: int = 0,
                 init_range: float = 0.1) -> None:
        super().__init__()
        if not sizes or any(int(s) < 1 for s in sizes):
            raise SegnasError(f"controller: every decision needs at least one choice, got sizes {list(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.hidden, self.layers = hidden, layers
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.register_buffer("offsets", torch.from_numpy(offsets), persistent=False)
        with torch.random.fork_rng(devices=[]):  # its own initialization: the global RNG is left alone
            torch.manual_seed(seed)
            self.start = nn.Parameter(torch.zeros(1, 1, hidden))
            self.embed = nn.Embedding(sum(self.sizes), hidden)
            self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True)
            self.heads = nn.ModuleList(nn.Linear(hidden, s) for s in self.sizes)
            for p in self.parameters():  # ENAS / the official controller: U(-0.1, 0.1)
                nn.init.uniform_(p, -init_range, init_range)

    @property
    def length(self) -> int:
        return len(self.sizes)

    def sample(self, rng: np.random.Generator) -> list[int]:
        """One decision sequence drawn from the policy with ``rng``."""
        return self.draw(rng)[0]

    @torch.no_grad()
    def draw(self, rng: np.random.Generator) -> tuple[list[int], float]:
        """One decision sequence drawn from the policy with ``rng``, and its log-probability under
        the policy that drew it (PPO's "old" policy for this sequence)."""
        x, state, out, log_prob = self.start, None, [], 0.0
        for i, head in enumerate(self.heads):
            y, state = self.lstm(x, state)
            p = torch.softmax(head(y[:, -1]).double(), -1)[0].numpy()
            choice = int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right"), len(p) - 1))
            out.append(choice)
            log_prob += float(np.log(p[choice]))
            x = self.embed(self.offsets[i:i + 1] + choice)[None]
        return out, log_prob

    def log_prob(self, decisions: torch.Tensor | Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy (summed over positions) of each of a batch of sequences (B, L)."""
        d = torch.as_tensor(decisions, dtype=torch.long)
        if d.dim() != 2 or d.shape[1] != self.length:
            raise SegnasError(f"controller: expected decision sequences of length {self.length}, got shape "
                              f"{tuple(d.shape)}")
        batch = d.shape[0]
        inputs = torch.cat([self.start.expand(batch, 1, self.hidden), self.embed(d[:, :-1] + self.offsets[:-1])], 1)
        y, _ = self.lstm(inputs)
        log_prob = y.new_zeros(batch)
        entropy = y.new_zeros(batch)
        for i, head in enumerate(self.heads):
            logp = F.log_softmax(head(y[:, i]), -1)
            log_prob = log_prob + logp.gather(1, d[:, i:i + 1])[:, 0]
            entropy = entropy - (logp.exp() * logp).sum(-1)
        return log_prob, entropy


class PolicyGradient:
    """Trains an ``LSTMController`` from (decisions, reward) pairs: ``update`` after each evaluated
    batch. ``agent`` "reinforce": one step on the batch's −log π·(r − b); "ppo": the pairs join a
    buffer of the last ``buffer`` ones, then ``epochs`` passes over it in minibatches of
    ``minibatch`` with PPO's clipped surrogate (clip ``clip``), each pair's ratio taken against the
    log-probability of the policy that drew it. The baseline b is an exponential moving average of
    the rewards (decay ``baseline_decay``), advanced by each reward in turn: REINFORCE takes each
    reward's advantage against the baseline it has just advanced (as the official code does), PPO
    the whole buffer's against the latest one."""

    def __init__(self, controller: LSTMController, agent: Literal["ppo", "reinforce"] = "ppo", lr: float = 1e-3,
                 baseline_decay: float = 0.95, clip: float = 0.1, buffer: int = 100, epochs: int = 1,
                 minibatch: int = 10, clip_grad_norm: float = 2.0, entropy_weight: float = 0.0) -> None:
        if agent not in ("ppo", "reinforce"):
            raise SegnasError(f"controller.agent: expected 'ppo' or 'reinforce', got {agent!r}")
        self.controller, self.agent = controller, agent
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr)
        self.baseline_decay, self.clip, self.buffer_size = baseline_decay, clip, buffer
        self.epochs, self.minibatch = epochs, minibatch
        self.clip_grad_norm, self.entropy_weight = clip_grad_norm, entropy_weight
        self.baseline: float | None = None
        #: PPO's buffer: decisions, their log-probability when drawn, reward
        self.buffer: list[tuple[list[int], float, float]] = []
        self.updates = 0

    def _advance_baseline(self, reward: float) -> float:
        d = self.baseline_decay
        self.baseline = reward if self.baseline is None else d * self.baseline + (1 - d) * reward
        return self.baseline

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad_norm:
            nn.utils.clip_grad_norm_(self.controller.parameters(), self.clip_grad_norm)
        self.optimizer.step()

    def update(self, decisions: Sequence[Sequence[int]], rewards: Sequence[float], rng: np.random.Generator,
               drawn_log_probs: Sequence[float | None] | None = None) -> dict[str, float]:
        """Learn from one evaluated batch; ``rng`` orders PPO's minibatches. ``drawn_log_probs``:
        each sequence's log-probability when it was drawn (``LSTMController.draw``); where None, the
        current policy's (the same when no update came between the draw and this one). Returns
        figures to log."""
        if not decisions:
            return {}
        decisions = [list(map(int, d)) for d in decisions]
        rewards = [float(r) for r in rewards]
        if self.agent == "reinforce":
            advantages = [r - self._advance_baseline(r) for r in rewards]
            log_prob, entropy = self.controller.log_prob(decisions)
            adv = torch.tensor(advantages, dtype=log_prob.dtype)
            loss = -(log_prob * adv).mean() - self.entropy_weight * entropy.mean()
            self._step(loss)
            stats = {"loss": float(loss.detach()), "entropy": float(entropy.detach().mean())}
        else:
            with torch.no_grad():
                old = self.controller.log_prob(decisions)[0].tolist()
            drawn = list(drawn_log_probs) if drawn_log_probs is not None else [None] * len(decisions)
            if len(drawn) != len(decisions):
                raise SegnasError(f"controller: {len(drawn)} drawn log-probabilities for {len(decisions)} sequences")
            old = [lp if lp is not None else now for lp, now in zip(drawn, old)]
            for d, lp, r in zip(decisions, old, rewards):
                self._advance_baseline(r)
                self.buffer.append((d, lp, r))
            self.buffer = self.buffer[-self.buffer_size:]
            stats = self._ppo_passes(rng)
        self.updates += 1
        return {**stats, "baseline": float(self.baseline)}

    def _ppo_passes(self, rng: np.random.Generator) -> dict[str, float]:
        d = torch.tensor([b[0] for b in self.buffer], dtype=torch.long)
        old = torch.tensor([b[1] for b in self.buffer])
        adv = torch.tensor([b[2] for b in self.buffer]) - self.baseline
        losses, entropies = [], []
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(self.buffer)))
            for idx in order.split(self.minibatch):
                log_prob, entropy = self.controller.log_prob(d[idx])
                ratio = torch.exp(log_prob - old[idx].to(log_prob.dtype))
                a = adv[idx].to(log_prob.dtype)
                surrogate = torch.min(ratio * a, ratio.clamp(1 - self.clip, 1 + self.clip) * a)
                loss = -surrogate.mean() - self.entropy_weight * entropy.mean()
                self._step(loss)
                losses.append(float(loss.detach()))
                entropies.append(float(entropy.detach().mean()))
        return {"loss": float(np.mean(losses)), "entropy": float(np.mean(entropies))}

    # ------------------------------------------------------------------ checkpoint (JSON-safe)
    def state_dict(self) -> dict[str, Any]:
        """Everything to continue exactly: weights and optimizer (as base64 of ``torch.save``, so the
        whole state fits the search's JSON checkpoint), baseline, buffer, update count."""
        blob = io.BytesIO()
        torch.save({"controller": self.controller.state_dict(), "optimizer": self.optimizer.state_dict()}, blob)
        return {"weights": base64.b64encode(blob.getvalue()).decode("ascii"), "baseline": self.baseline,
                "buffer": [list(b) for b in self.buffer], "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = torch.load(io.BytesIO(base64.b64decode(state["weights"])), weights_only=True)
        self.controller.load_state_dict(saved["controller"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.baseline = state["baseline"]
        self.buffer = [(list(d), float(lp), float(r)) for d, lp, r in state["buffer"]]
        self.updates = state["updates"]
