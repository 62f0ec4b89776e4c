"""The ``text_lm`` task: next-token prediction on a token stream; metric: perplexity."""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mamba4net.core.errors import DataError
from mamba4net.core.model import eval_mode
from mamba4net.core.protocols import Batch, ModelOutput

from .config import TextLMParams
from .corpus import embedding_matrices, load_tokenizer, read_corpus


class TokenWindows:
    """Non-overlapping windows of ``seq_len + 1`` tokens: ``input_ids`` and the next tokens ``labels``."""

    def __init__(self, tokens: Tensor, seq_len: int):
        n = max(0, (len(tokens) - 1) // seq_len)
        self.windows = tokens[: n * seq_len + 1]
        self.seq_len, self.n = seq_len, n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: Tensor) -> Batch:
        starts = indices[:, None] * self.seq_len + torch.arange(self.seq_len + 1)  # (B, L + 1)
        chunk = self.windows[starts]
        return {"input_ids": chunk[:, :-1], "labels": chunk[:, 1:]}


class TextLMTask:
    name = "text_lm"
    metric = "perplexity"
    higher_is_better = False
    default_encoder = "token_embed"
    default_head = "lm_head"
    default_baselines = ["unigram"]

    def __init__(self, params: TextLMParams):
        self.params = params
        text, self.source = read_corpus(params.corpus)
        self.tokenizer = load_tokenizer(params.model)
        ids = torch.tensor(self.tokenizer(text)["input_ids"], dtype=torch.long)
        if params.max_tokens is not None:
            ids = ids[: params.max_tokens]
        n = len(ids)
        n_valid, n_test = int(n * params.valid_fraction), int(n * params.test_fraction)
        cut = n - n_valid - n_test
        self._splits = {"train": TokenWindows(ids[:cut], params.seq_len),
                        "valid": TokenWindows(ids[cut : cut + n_valid], params.seq_len),
                        "test": TokenWindows(ids[cut + n_valid :], params.seq_len)}
        empty = [s for s, d in self._splits.items() if len(d) == 0]
        if empty:
            raise DataError(f"task.corpus ({self.source}): {n} tokens leave no window of {params.seq_len} tokens "
                            f"for {', '.join(empty)}")
        self.vocab_size = len(self.tokenizer)
        self.n_tokens = n

    @cached_property
    def embeddings(self) -> tuple[Tensor, Tensor]:
        """The LLM's (input, output) embedding matrices (V, D), read once."""
        return embedding_matrices(self.params.model)

    def data(self, split: str) -> TokenWindows:
        return self._splits[split]

    def loss(self, out: ModelOutput, batch: Batch) -> Tensor:
        logits = out.pred  # (B, L, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten().to(logits.device))

    @torch.no_grad()
    def evaluate(self, predictor: Any, split: str) -> dict[str, float]:
        data = self.data(split)
        total, count = 0.0, 0
        with eval_mode(predictor):
            for start in range(0, len(data), self.params.eval_batch_size):
                batch = data.batch(torch.arange(start, min(len(data), start + self.params.eval_batch_size)))
                if hasattr(predictor, "predict"):
                    logits = torch.as_tensor(predictor.predict(batch))
                else:
                    device = next(predictor.parameters()).device
                    logits = predictor({k: v.to(device) for k, v in batch.items()}).pred
                nll = F.cross_entropy(logits.flatten(0, 1).float().cpu(), batch["labels"].flatten(), reduction="sum")
                total += float(nll)
                count += batch["labels"].numel()
        nll = total / max(1, count)
        return {"perplexity": math.exp(nll), "nll": nll, "n_tokens": count}
