"""Token embedding (encoder), LM head, and the unigram baseline."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mamba4net.core.protocols import Batch


class TokenEmbedding(nn.Module):
    """input_ids (B, L) -> the LLM's embeddings (B, L, D_llm) -> (projected to d_model when narrower)."""

    def __init__(self, matrix: Tensor, d_model: int, freeze: bool):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(matrix.clone(), freeze=freeze)
        d_llm = matrix.shape[1]
        self.proj = nn.Identity() if d_llm == d_model else nn.Linear(d_llm, d_model, bias=False)

    def forward(self, batch: Batch) -> Tensor:
        return self.proj(self.embed(batch["input_ids"]))


class LMHead(nn.Module):
    """hidden (B, L, d_model) -> (projected to D_llm) -> logits (B, L, V) through the LLM's output matrix."""

    def __init__(self, matrix: Tensor, d_model: int, freeze: bool):
        super().__init__()
        d_llm = matrix.shape[1]
        self.proj = nn.Identity() if d_llm == d_model else nn.Linear(d_model, d_llm, bias=False)
        self.out = nn.Linear(d_llm, matrix.shape[0], bias=False)
        with torch.no_grad():
            self.out.weight.copy_(matrix)
        self.out.weight.requires_grad_(not freeze)

    def forward(self, hidden: Tensor, batch: Batch) -> Tensor:
        return self.out(self.proj(hidden))


class Unigram:
    """Each next token from the training split's token frequencies (add-one smoothed)."""

    name = "unigram"

    def fit(self, task) -> None:
        counts = torch.bincount(task.data("train").windows, minlength=task.vocab_size).float() + 1.0
        self.log_probs = (counts / counts.sum()).log()

    def predict(self, batch: Batch) -> Tensor:
        b, l = batch["input_ids"].shape
        return self.log_probs.expand(b, l, -1)
