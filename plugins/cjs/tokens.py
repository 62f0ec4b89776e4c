"""Tokens and heads of the return-conditioned CJS sequence policies (teacher and student).

Encoder ``cjs_tokens`` (:class:`CJSTokenEncoder`): the Decima-style :class:`~.encoder.GraphEncoder`
embeds every decision's graph (node, job and global embeddings); then per decision (layout in
:mod:`.windows`):

* stage token   = LN(W_s [node, job, global, x_node] + kind_stage + step_t)
* executor token = LN(W_e [global, rtg, free executors / N, active jobs / 10] + kind_exec + step_t)
* action token  = LN(W_a [node, job, global, x_node] of the taken stage + level_emb + kind_act + step_t)

``step_t`` embeds the decision's position in its context block (0..W-1), as the timestep of the
Decision Transformer. The same functions serve training (a batch of windows, :meth:`forward`) and
streaming (one decision at a time, :meth:`decision_tokens` then :meth:`action_token`).
:meth:`live_tokens` is :meth:`decision_tokens` for a scheduler deciding live: straight from the
observation and its job set's structure kept between decisions (:class:`~.graph.JobSetCache`),
without building a batch or running torch_geometric; the same ops on the same values, so the
same tokens bit for bit (tests check it).

Head ``cjs_policy`` (:class:`CJSPolicyHead`): two heads read at each executor token ``h_e``:

* stage choice, pointer style: ``score_i = <W_q h_e, W_k h_{stage_i}> / sqrt(H)`` over that
  decision's candidate stage tokens (absent candidates get :data:`MASKED`);
* parallelism limit: ``MLP(h_e)`` over the ``limit_levels`` levels.

``pred`` is ``(B, W, K + levels)``: the K stage logits then the level logits, a fixed shape so
teacher outputs can be cached; :func:`split_pred` takes it apart. The loss ``cjs_kd``
(:class:`CJSKDLoss`) is ``T^2 [KL_stage + limit_weight * KL_limit]`` (teacher || student) over the
real decisions: distillation on both heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import GraphEncoder, mlp_plain
from .graph import NUM_FEATURES, JobSet

MASKED = -1e4  # logit of an absent candidate: finite, so KL terms stay finite (exp underflows to 0)


class CJSTokenEncoder(nn.Module):
    """A batch of :mod:`.windows` -> tokens ``(B, L, d_model)`` (``L`` = longest sample)."""

    def __init__(self, d_model: int, *, hidden: int = 32, rounds: int = 4, window: int = 8,
                 limit_levels: int = 10):
        super().__init__()
        self.d_model, self.window = d_model, window
        self.graph = GraphEncoder(NUM_FEATURES, hidden, rounds)
        feat = 3 * hidden + NUM_FEATURES
        self.stage_proj = nn.Linear(feat, d_model)
        self.exec_proj = nn.Linear(hidden + 3, d_model)
        self.act_proj = nn.Linear(feat, d_model)
        self.level = nn.Embedding(limit_levels, d_model)
        self.kind = nn.Embedding(3, d_model)  # stage, executor, action
        self.step = nn.Embedding(window, d_model)
        self.norm = nn.LayerNorm(d_model)

    # --- the pieces --------------------------------------------------------------------------
    def node_features(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(per node [node, job, global, x] (Nn, 3H+F), per decision global embedding (n, H))."""
        node, job, glob = self.graph(batch)
        x = batch["graph_x"].to(node.dtype)
        node_job = batch["graph_node_job"]
        dec = batch["graph_job_sample"][node_job]
        return torch.cat([node, job[node_job], glob[dec], x], dim=-1), glob

    def _step(self, step: Tensor) -> Tensor:
        return self.step(step.clamp(0, self.window - 1))

    def stage_tokens(self, feats: Tensor, step: Tensor) -> Tensor:
        return self.norm(self.stage_proj(feats) + self.kind.weight[0] + self._step(step))

    def exec_tokens(self, glob: Tensor, rtg: Tensor, dec_feat: Tensor, step: Tensor) -> Tensor:
        dtype = glob.dtype
        feat = torch.cat([glob, rtg.to(dtype).unsqueeze(-1), dec_feat.to(dtype)], dim=-1)
        return self.norm(self.exec_proj(feat) + self.kind.weight[1] + self._step(step))

    def action_token(self, feats: Tensor, level: Tensor, step: Tensor) -> Tensor:
        """The taken stage's features ``(..., 3H+F)`` and level ``(...)`` -> ``(..., D)``."""
        return self.norm(self.act_proj(feats) + self.level(level) + self.kind.weight[2] + self._step(step))

    # --- training: windows -------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        feats, glob = self.node_features(batch)
        B = batch["length"].shape[0]
        out = glob.new_zeros(B, int(batch["length"].max()), self.d_model)
        dm, cm = batch["dec_mask"], batch["cand_mask"]
        b_idx = torch.arange(B, device=dm.device)[:, None].expand_as(dm)  # (B, W)
        step = batch["step"]
        bc = b_idx[:, :, None].expand_as(cm)
        out[bc[cm], batch["stage_pos"][cm]] = self.stage_tokens(feats[batch["cand_node"][cm]],
                                                                step[:, :, None].expand_as(cm)[cm]).to(out.dtype)
        dec = batch["dec_index"][dm]
        out[b_idx[dm], batch["exec_pos"][dm]] = self.exec_tokens(glob[dec], batch["rtg"][dm], batch["dec_feat"][dec],
                                                                 step[dm]).to(out.dtype)
        out[b_idx[dm], batch["act_pos"][dm]] = self.action_token(feats[batch["act_node"][dm]], batch["level"][dm],
                                                                 step[dm]).to(out.dtype)
        return out

    # --- streaming: one decision -------------------------------------------------------------
    def decision_tokens(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """A batch of one sample holding one decision -> (its tokens before the action
        ``(k + 1, D)``: the k stage tokens then the executor token; candidate features ``(k, 3H+F)``)."""
        feats, glob = self.node_features(batch)
        cm = batch["cand_mask"][0, 0]
        cand_feats = feats[batch["cand_node"][0, 0][cm]]
        return self._decision(cand_feats, glob[:1], batch["rtg"][0, :1], batch["dec_feat"][:1], batch["step"][0, 0])

    def live_tokens(self, x: Tensor, structure: JobSet, cand: Tensor, rtg: float, step: int) -> tuple[Tensor, Tensor]:
        """:meth:`decision_tokens` of one decision from its observation: node features ``x``
        (nodes, F), the structure of its active jobs, candidate nodes ``cand`` (k,), the
        return-to-go (already scaled) and the position in the context block. Message passing on
        the structure's indices (:meth:`~.encoder.ChildrenToParent.plain`), MLPs as plain ops
        (:func:`~.encoder.mlp_plain`); [node, job, global, x] gathered for the k candidates only."""
        graph = self.graph
        x = x.to(graph.node_in[0].weight.dtype)
        parent_rows = structure.parent.view(-1, 1).expand(-1, graph.hidden)  # (E, H)
        node, job, glob = graph.embed(x, lambda h: graph.passing.plain(h, structure.child, parent_rows),
                                      structure.node_job, structure.job_sample, 1,
                                      run_mlp=mlp_plain)  # (nodes, H), (J, H), (1, H)
        cand_feats = torch.cat([node[cand], job[structure.node_job[cand]], glob.expand(cand.shape[0], -1), x[cand]],
                               dim=-1)  # (k, 3H+F)
        rtg_t = torch.tensor([rtg], dtype=torch.float32, device=x.device)
        return self._decision(cand_feats, glob, rtg_t, x[:1, 8:10], torch.tensor(step, device=x.device))

    def _decision(self, cand_feats: Tensor, glob: Tensor, rtg: Tensor, dec_feat: Tensor,
                  step: Tensor) -> tuple[Tensor, Tensor]:
        """Candidate features (k, 3H+F), global embedding (1, H), rtg (1,), [free, load] (1, 2)
        and the block position (a 0-d tensor) -> (tokens (k + 1, D), the candidate features)."""
        stages = self.stage_tokens(cand_feats, step.expand(cand_feats.shape[0]))
        exec_tok = self.exec_tokens(glob, rtg, dec_feat, step.view(1))
        return torch.cat([stages, exec_tok]), cand_feats


class CJSPolicyHead(nn.Module):
    """``hidden (B, L, D)`` + batch -> ``pred (B, W, K + levels)`` (see module doc)."""

    def __init__(self, d_model: int, *, max_stages: int, limit_levels: int, hidden: int = 64):
        super().__init__()
        self.max_stages, self.limit_levels, self.hidden = max_stages, limit_levels, hidden
        self.q = nn.Linear(d_model, hidden)
        self.k = nn.Linear(d_model, hidden)
        self.limit = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, limit_levels))

    def scores(self, h_exec: Tensor, h_stages: Tensor, cand_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``h_exec (..., D)``, ``h_stages (..., K, D)``, ``cand_mask (..., K)`` -> (stage logits
        (..., K), level logits (..., levels))."""
        dtype = self.q.weight.dtype
        h_exec, h_stages = h_exec.to(dtype), h_stages.to(dtype)
        q = self.q(h_exec).unsqueeze(-2)  # (..., 1, H)
        s = (q * self.k(h_stages)).sum(-1) / math.sqrt(self.hidden)  # (..., K)
        s = s.float().masked_fill(~cand_mask, MASKED)
        return s, self.limit(h_exec).float()

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        B = hidden.shape[0]
        b = torch.arange(B, device=hidden.device)
        h_exec = hidden[b[:, None], batch["exec_pos"]]  # (B, W, D)
        h_stages = hidden[b[:, None, None], batch["stage_pos"]]  # (B, W, K, D)
        stage, level = self.scores(h_exec, h_stages, batch["cand_mask"])
        return torch.cat([stage, level], dim=-1)  # (B, W, K + levels)


def split_pred(pred: Tensor, max_stages: int) -> tuple[Tensor, Tensor]:
    return pred[..., :max_stages], pred[..., max_stages:]


def policy_loss(pred: Tensor, batch: dict[str, Tensor], max_stages: int) -> Tensor:
    """The RL loss of return-conditioned sequence modelling: cross-entropy on both heads (the
    stage where the behaviour's pick is a candidate, the level at every real decision)."""
    stage, level = split_pred(pred.float(), max_stages)
    dm = batch["dec_mask"].to(pred.device)
    action = batch["action"].to(pred.device)
    pick = dm & (action >= 0)
    zero = pred.sum() * 0.0
    ce_stage = F.cross_entropy(stage[pick], action[pick]) if pick.any() else zero
    ce_level = F.cross_entropy(level[dm], batch["level"].to(pred.device)[dm]) if dm.any() else zero
    return ce_stage + ce_level


def _kl(student: Tensor, teacher: Tensor, t: float) -> Tensor:
    s_logp = F.log_softmax(student / t, dim=-1)
    t_logp = F.log_softmax(teacher / t, dim=-1)
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1)


class CJSKDLoss:
    """``T^2 [KL(pi_t || pi_s) on stages + limit_weight * KL on levels]``, mean over real decisions."""

    needs_teacher = True

    def __init__(self, max_stages: int, temperature: float = 1.0, limit_weight: float = 1.0):
        self.max_stages, self.t, self.limit_weight = max_stages, temperature, limit_weight

    def __call__(self, student, teacher, batch: dict[str, Tensor]) -> Tensor:
        s_stage, s_level = split_pred(student.pred.float(), self.max_stages)
        t_stage, t_level = split_pred(teacher.pred.detach().float().to(student.pred.device), self.max_stages)
        if s_stage.shape != t_stage.shape or s_level.shape != t_level.shape:
            raise ValueError(f"cjs_kd: student pred {tuple(student.pred.shape)} and teacher pred "
                             f"{tuple(teacher.pred.shape)} differ in shape")
        dm = batch["dec_mask"].to(s_stage.device)
        kl = _kl(s_stage, t_stage, self.t) + self.limit_weight * _kl(s_level, t_level, self.t)  # (B, W)
        return (kl * dm).sum() / dm.sum().clamp_min(1) * self.t * self.t
