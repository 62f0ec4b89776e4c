"""Graph encoder for DAG-structured states (torch_geometric message passing), Decima style.

Three levels of embeddings from a graph batch (keys in :mod:`.graph`):

* node: ``h0 = MLP(x)``; then ``rounds`` times ``h = h0 + g(sum over children c of f(h_c))``, so
  each stage summarises its descendants (the work its completion unlocks), as in Decima;
* job: ``MLP(sum of its nodes' [h, x])``;
* global: ``MLP(sum of the sample's job embeddings)``.

Message passing runs through torch_geometric (:class:`ChildrenToParent`) on batches; a scheduler
deciding live uses :meth:`ChildrenToParent.plain` and :func:`mlp_plain`, the same ops on indices it
keeps between decisions, without torch_geometric's and nn.Module's per-call work (bit for bit the
same results; tests check it).

:class:`GraphEncoder` returns the three; :class:`GraphTokenEncoder` (the registered encoder)
turns them into backbone tokens: per sample, one token per pickable stage (``graph_mask``) in
node order, then one summary token, right-padded with zeros to the longest sample:
``(B, L, d_model)``, ``L = max pickable stages + 1``. :func:`token_layout` says where each
sample's tokens are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from .graph import NUM_FEATURES


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, n_out))


def mlp_plain(mlp: nn.Sequential, x: Tensor) -> Tensor:
    """``mlp(x)`` for an :func:`_mlp`: the same three ops without nn.Module's per-call work."""
    first, act, second = mlp
    return F.linear(F.leaky_relu(F.linear(x, first.weight, first.bias), act.negative_slope), second.weight, second.bias)


class ChildrenToParent(MessagePassing):
    """``out_v = sum over children c of v of f(h_c)`` along parent -> child edges."""

    def __init__(self, hidden: int):
        super().__init__(aggr="add", flow="target_to_source")  # aggregate edge_index[1] at edge_index[0]
        self.f = _mlp(hidden, hidden, hidden)

    def forward(self, h: Tensor, edge_index: Tensor) -> Tensor:
        return self.propagate(edge_index, h=h)

    def message(self, h_j: Tensor) -> Tensor:
        return self.f(h_j)

    def plain(self, h: Tensor, child: Tensor, parent_rows: Tensor) -> Tensor:
        """:meth:`forward` as the ops torch_geometric runs for it, on indices kept by the caller:
        ``child = edge_index[1]`` (E,) and ``parent_rows = edge_index[0]`` expanded to ``(E, H)``."""
        messages = mlp_plain(self.f, h.index_select(0, child))  # (E, H)
        return h.new_zeros(h.shape[0], messages.shape[1]).scatter_add_(0, parent_rows, messages)  # (nodes, H)


def _segment_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    out = values.new_zeros(size, values.shape[1])
    return out.index_add_(0, index, values)


class GraphEncoder(nn.Module):
    """Graph batch -> (node (nodes, H), job (jobs, H), global (B, H)) embeddings."""

    def __init__(self, in_features: int = NUM_FEATURES, hidden: int = 32, rounds: int = 4):
        super().__init__()
        self.hidden, self.rounds = hidden, rounds
        self.node_in = _mlp(in_features, hidden, hidden)
        self.passing = ChildrenToParent(hidden)
        self.g = _mlp(hidden, hidden, hidden)
        self.job = _mlp(hidden + in_features, hidden, hidden)
        self.glob = _mlp(hidden, hidden, hidden)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        x = batch["graph_x"].to(self.node_in[0].weight.dtype)  # (nodes, F)
        edge_index = batch["graph_edge_index"]  # (2, E)
        job_sample = batch["graph_job_sample"]
        n_samples = int(job_sample.max()) + 1 if job_sample.shape[0] else 0
        return self.embed(x, lambda h: self.passing(h, edge_index), batch["graph_node_job"], job_sample, n_samples)

    def embed(self, x: Tensor, children_sum, node_job: Tensor, job_sample: Tensor, n_samples: int,
              run_mlp=None) -> tuple[Tensor, Tensor, Tensor]:
        """The three embeddings of ``x`` (nodes, F); ``children_sum(h)`` is the message passing
        (:class:`ChildrenToParent` on the graph's edges); ``run_mlp(mlp, v)`` runs each MLP
        (default ``mlp(v)``; live decisions use :func:`mlp_plain`)."""
        run = run_mlp or (lambda mlp, v: mlp(v))
        h0 = run(self.node_in, x)  # (nodes, H)
        h = h0
        for _ in range(self.rounds):
            h = h0 + run(self.g, children_sum(h))  # (nodes, H)
        job = run(self.job, _segment_sum(torch.cat([h, x], dim=-1), node_job, job_sample.shape[0]))  # (jobs, H)
        glob = run(self.glob, _segment_sum(job, job_sample, n_samples))  # (B, H)
        return h, job, glob


def token_layout(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(sample of each pickable node, its position in that sample's token row), node order."""
    mask = batch["graph_mask"]
    sample = batch["graph_job_sample"][batch["graph_node_job"][mask]]  # (picks,)
    counts = torch.bincount(sample, minlength=int(sample.max()) + 1 if sample.numel() else 1)
    starts = torch.cumsum(counts, 0) - counts  # (B,) first pick of each sample
    order = torch.argsort(sample, stable=True)  # node order kept within a sample
    pos = torch.empty_like(sample)
    pos[order] = torch.arange(sample.numel()) - starts[sample[order]]
    return sample, pos


class GraphTokenEncoder(nn.Module):
    """Registered encoder ``cjs_graph``: graph batch -> tokens ``(B, L, d_model)`` (see module doc).

    Each stage token is ``proj([node, job, global])``; the summary token is
    ``proj([0, 0, global])`` (the last real token of each row). Padding is zeros.
    """

    def __init__(self, d_model: int, hidden: int = 32, rounds: int = 4, in_features: int = NUM_FEATURES):
        super().__init__()
        self.d_model = d_model
        self.graph = GraphEncoder(in_features, hidden, rounds)
        self.proj = nn.Linear(3 * hidden, d_model)  # eq. 2: the linear projection to the backbone width

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        node, job, glob = self.graph(batch)  # (nodes, H), (jobs, H), (B, H)
        mask = batch["graph_mask"]
        n_samples = glob.shape[0]
        sample, pos = token_layout(batch)  # (picks,), (picks,)
        counts = torch.bincount(sample, minlength=n_samples)  # (B,)
        length = int(counts.max()) + 1 if n_samples else 1
        feats = torch.cat([node[mask], job[batch["graph_node_job"][mask]], glob[sample]], dim=-1)  # (picks, 3H)
        out = glob.new_zeros(n_samples, length, self.d_model)  # (B, L, D)
        out[sample, pos] = self.proj(feats)
        summary = torch.cat([torch.zeros_like(glob), torch.zeros_like(glob), glob], dim=-1)  # (B, 3H)
        out[torch.arange(n_samples), counts] = self.proj(summary)
        return out
