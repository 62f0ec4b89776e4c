"""A Pensieve-style learned ABR policy: an actor-critic on the 6 x 6 Pensieve state, trained in
the simulator on the training traces (delay noise on), greedy (argmax) at test time, keeping the
weights with the best validation QoE.

Training, per epoch (``PensieveParams``):

1. **Rollout.** One episode (47 decisions) on ``envs_per_epoch`` training traces drawn without
   replacement, at random start rows and with delay noise, sampling each action from the actor's
   softmax (a dedicated, seeded ``torch.Generator``).
2. **Advantages.** Rewards (the per-chunk QoE) are multiplied by ``reward_scale`` (a rebuffer can
   cost tens of QoE per chunk); the critic's values of the visited states give generalised
   advantage estimates (GAE, ``gamma``, ``gae_lambda``; the value after the last chunk is 0), and
   the critic's targets are advantage + value (the lambda-returns).
3. **Update.** ``ppo_epochs`` passes over the batch in shuffled minibatches of ``minibatch``
   decisions. Besides Pensieve's plain actor-critic this uses PPO's clipped surrogate (Schulman et
   al., 2017): the actor minimises ``-min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A)`` with
   ``ratio`` the new over the rollout-time action probability and ``A`` the advantages
   standardised per minibatch, minus ``beta`` x the policy entropy, ``beta`` decaying linearly
   from ``entropy`` to ``entropy_final`` over the epochs; the critic minimises the squared error
   to the lambda-returns. Actor and critic are separate networks with their own Adam learning
   rates (``lr_actor``, ``lr_critic``), one optimiser step on the summed losses, gradients clipped
   to ``max_grad_norm``.
4. **Selection.** Every ``valid_every`` epochs (and after the last) the greedy policy is played on
   the validation environment; the weights with the best QoE are restored at the end.

Each network reads the state with the sequence policies' Pensieve state encoder
(:class:`..encoder.ABRStateEncoder`), so both read the state the same way. With one torch thread
the whole run is deterministic for a given ``seed``.
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

    def actor_parameters(self) -> list[nn.Parameter]:
        return list(self.actor_state.parameters()) + list(self.actor.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic_state.parameters()) + list(self.critic.parameters())


def gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """(N, T) rewards and values of the visited states -> (N, T) advantages; the episode ends
    after step T - 1 (value 0 there)."""
    adv = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[0], dtype=rewards.dtype)
    next_value = np.zeros(rewards.shape[0], dtype=rewards.dtype)
    for t in range(rewards.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        adv[:, t] = running
        next_value = values[:, t]
    return adv


class Pensieve(nn.Module):
    name = "pensieve"

    def __init__(self, params: PensieveParams | None = None):
        super().__init__()
        self.p = params or PensieveParams()
        torch.manual_seed(self.p.seed)
        self.net = ActorCritic(self.p.hidden)
        self.sample = False  # sample actions (training) or take the argmax (evaluation)
        self._gen = torch.Generator().manual_seed(self.p.seed)
        self.history: list[dict[str, float]] = []

    # --- AbrPolicy ---------------------------------------------------------------------------
    def reset(self, n: int) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: Observation) -> np.ndarray:
        logits, _ = self.net(torch.as_tensor(obs.pensieve_state(), dtype=torch.float32))
        if self.sample:
            probs = torch.softmax(logits, -1)
            return torch.multinomial(probs, 1, generator=self._gen).squeeze(-1).numpy().astype(np.int64)
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
        self._gen.manual_seed(p.seed)
        shuffle = torch.Generator().manual_seed(p.seed + 1)
        opt = torch.optim.Adam([
            {"params": self.net.actor_parameters(), "lr": p.lr_actor},
            {"params": self.net.critic_parameters(), "lr": p.lr_critic},
        ])
        best, best_state = -np.inf, None
        bar = progress_bar(total=p.epochs, desc="pensieve", enabled=progress)
        for epoch in range(p.epochs):
            # 1. rollout with sampled actions
            pick = rng.choice(len(traces), size=min(p.envs_per_epoch, len(traces)), replace=False)
            env = AbrEnv([traces[i] for i in pick], video_sizes, noise=True, seed=int(rng.integers(2**31)))
            seen = Transitions()
            self.sample = True
            rollout(env, self, on_decision=seen.record)
            self.sample = False
            states, actions, r = seen.arrays()  # (N, T, 6, 6), (N, T), (N, T)
            n, t = actions.shape
            s = torch.from_numpy(states).flatten(0, 1)
            a = torch.from_numpy(actions).flatten()
            # 2. GAE on scaled rewards
            with torch.no_grad():
                logits, value = self.net(s)
                old_logp = F.log_softmax(logits, -1).gather(-1, a[:, None]).squeeze(-1)
            values = value.numpy().reshape(n, t)
            adv_np = gae(r * p.reward_scale, values, p.gamma, p.gae_lambda)
            adv = torch.from_numpy(adv_np).flatten()
            ret = adv + value
            # 3. clipped minibatch updates
            frac = epoch / max(1, p.epochs - 1)
            beta = p.entropy + (p.entropy_final - p.entropy) * frac
            size = n * t
            for _ in range(p.ppo_epochs):
                order = torch.randperm(size, generator=shuffle)
                for lo in range(0, size, p.minibatch):
                    idx = order[lo:lo + p.minibatch]
                    logits, v = self.net(s[idx])
                    logp_all = F.log_softmax(logits, -1)
                    logp = logp_all.gather(-1, a[idx, None]).squeeze(-1)
                    mb_adv = adv[idx]
                    if len(idx) > 1:
                        mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                    ratio = torch.exp(logp - old_logp[idx])
                    surrogate = torch.min(ratio * mb_adv, ratio.clamp(1 - p.clip, 1 + p.clip) * mb_adv)
                    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                    actor_loss = -surrogate.mean() - beta * entropy
                    critic_loss = F.mse_loss(v, ret[idx])
                    opt.zero_grad()
                    (actor_loss + critic_loss).backward()
                    nn.utils.clip_grad_norm_(self.net.parameters(), p.max_grad_norm)
                    opt.step()
            bar.update(1)
            bar.set_postfix(reward=f"{r.mean():.3f}")
            # 4. selection on validation QoE
            if valid_env is not None and ((epoch + 1) % p.valid_every == 0 or epoch + 1 == p.epochs):
                qoe = summarize(rollout(valid_env, self))["qoe"]
                self.history.append({"epoch": epoch + 1, "train_reward": float(r.mean()), "valid_qoe": qoe})
                log.info("pensieve epoch %d: train reward %.3f, valid QoE %.3f", epoch + 1, r.mean(), qoe)
                if qoe > best:
                    best, best_state = qoe, copy.deepcopy(self.net.state_dict())
        bar.close()
        if best_state is not None:
            self.net.load_state_dict(best_state)
