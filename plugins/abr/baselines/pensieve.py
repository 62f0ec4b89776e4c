"""A Pensieve-style learned ABR policy: advantage actor-critic on the 6 x 6 Pensieve state,
trained in the simulator on the training traces (delay noise on), with entropy regularisation
that decays over training. The weights with the best validation QoE are kept. Greedy at test.

Each update plays one episode (47 decisions) on ``envs_per_epoch`` randomly drawn training traces
at random start points, sampling actions from the policy; returns are discounted with ``gamma``
and advantages standardised per update. The state network is the sequence policies' Pensieve
state encoder (:class:`..encoder.ABRStateEncoder`), so both read the state the same way.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mamba4net.core.progress import progress_bar

from ..encoder import N_ACTIONS, ABRStateEncoder
from ..rollout import Transitions, rollout, summarize
from ..sim import AbrEnv, Observation
from .config import PensieveParams

log = logging.getLogger("mamba4net")


class ActorCritic(nn.Module):
    """state (N, 6, 6) -> (logits (N, 6), value (N,))."""

    def __init__(self, hidden: int):
        super().__init__()
        self.actor_state = ABRStateEncoder(hidden, hidden=hidden, conv_channels=hidden)
        self.critic_state = ABRStateEncoder(hidden, hidden=hidden, conv_channels=hidden)
        self.actor = nn.Sequential(nn.LeakyReLU(), nn.Linear(hidden, N_ACTIONS))
        self.critic = nn.Sequential(nn.LeakyReLU(), nn.Linear(hidden, 1))

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.actor(self.actor_state.embed_state(state))
        value = self.critic(self.critic_state.embed_state(state)).squeeze(-1)
        return logits, value


class Pensieve(nn.Module):
    name = "pensieve"

    def __init__(self, params: PensieveParams | None = None):
        super().__init__()
        self.p = params or PensieveParams()
        torch.manual_seed(self.p.seed)
        self.net = ActorCritic(self.p.hidden)
        self.sample = False  # sample actions (training) or take the argmax (evaluation)
        self.history: list[dict[str, float]] = []

    # --- AbrPolicy ---------------------------------------------------------------------------
    def reset(self, n: int) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: Observation) -> np.ndarray:
        logits, _ = self.net(torch.as_tensor(obs.pensieve_state(), dtype=torch.float32))
        if self.sample:
            return torch.distributions.Categorical(logits=logits).sample().numpy().astype(np.int64)
        return logits.argmax(-1).numpy().astype(np.int64)

    # --- training ----------------------------------------------------------------------------
    def fit(self, task) -> None:
        """Train on ``task``'s training traces; select on its validation traces."""
        traces, _ = task.traces("train")
        self.train_on(traces, task.video_sizes, task.env("valid", limit=self.p.valid_traces))

    def train_on(self, traces: list, video_sizes: np.ndarray, valid_env: AbrEnv | None = None,
                 progress: bool = True) -> None:
        p = self.p
        rng = np.random.default_rng(p.seed)
        opt = torch.optim.Adam([
            {"params": list(self.net.actor_state.parameters()) + list(self.net.actor.parameters()), "lr": p.lr_actor},
            {"params": list(self.net.critic_state.parameters()) + list(self.net.critic.parameters()), "lr": p.lr_critic},
        ])
        best, best_state = -np.inf, None
        bar = progress_bar(total=p.epochs, desc="pensieve", enabled=progress)
        for epoch in range(p.epochs):
            pick = rng.choice(len(traces), size=min(p.envs_per_epoch, len(traces)), replace=False)
            env = AbrEnv([traces[i] for i in pick], video_sizes, noise=True, seed=int(rng.integers(2**31)))
            seen = Transitions()
            self.sample = True
            torch.manual_seed(p.seed * 100_003 + epoch)
            rollout(env, self, on_decision=seen.record)
            self.sample = False
            states, actions, r = seen.arrays()  # (N, T, 6, 6), (N, T), (N, T)
            s, a = torch.from_numpy(states), torch.from_numpy(actions)
            returns = np.zeros_like(r)
            running = np.zeros(r.shape[0])
            for t in range(r.shape[1] - 1, -1, -1):
                running = r[:, t] + p.gamma * running
                returns[:, t] = running
            g = torch.as_tensor(returns, dtype=torch.float32).flatten()
            logits, value = self.net(s.flatten(0, 1))
            adv = g - value.detach()
            adv = (adv - adv.mean()) / (adv.std() + 1e-6)
            logp = F.log_softmax(logits, -1)
            entropy = -(logp.exp() * logp).sum(-1).mean()
            frac = epoch / max(1, p.epochs - 1)
            beta = p.entropy + (p.entropy_final - p.entropy) * frac
            actor_loss = -(logp.gather(-1, a.flatten()[:, None]).squeeze(-1) * adv).mean() - beta * entropy
            critic_loss = F.mse_loss(value, g)
            opt.zero_grad()
            (actor_loss + critic_loss).backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
            opt.step()
            bar.update(1)
            bar.set_postfix(reward=f"{r.mean():.3f}")
            if valid_env is not None and ((epoch + 1) % p.valid_every == 0 or epoch + 1 == p.epochs):
                qoe = summarize(rollout(valid_env, self))["qoe"]
                self.history.append({"epoch": epoch + 1, "train_reward": float(r.mean()), "valid_qoe": qoe})
                log.info("pensieve epoch %d: train reward %.3f, valid QoE %.3f", epoch + 1, r.mean(), qoe)
                if qoe > best:
                    best, best_state = qoe, copy.deepcopy(self.net.state_dict())
        bar.close()
        if best_state is not None:
            self.net.load_state_dict(best_state)
