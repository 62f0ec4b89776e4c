"""Policy head: the hidden state where each decision is read -> logits over the 6 bitrates."""

from __future__ import annotations

from torch import Tensor, nn

from .encoder import N_ACTIONS


class PolicyHead(nn.Module):
    """``hidden (B, T * tokens_per_decision, D)`` -> ``(B, T, 6)``; or ``(B, D)`` -> ``(B, 6)`` when
    streaming. With the separate layout a decision is read at its state token (the second of its
    three), which has seen the return-to-go and the state but not yet the action."""

    def __init__(self, d_model: int, tokens_per_decision: int, hidden: int = 128):
        super().__init__()
        self.tpd = tokens_per_decision
        self.read_at = tokens_per_decision - 2 if tokens_per_decision > 1 else 0  # state token
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, N_ACTIONS))
        else:
            self.net = nn.Linear(d_model, N_ACTIONS)

    def forward(self, hidden: Tensor, batch: dict[str, Tensor] | None = None) -> Tensor:
        if hidden.dim() == 3:
            hidden = hidden[:, self.read_at :: self.tpd]  # (B, T, D)
        first = self.net[0] if isinstance(self.net, nn.Sequential) else self.net
        return self.net(hidden.to(first.weight.dtype))  # (B, T, 6) or (B, 6)
