"""Parameters of the text plugin (import-light: pydantic only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TextLMParams(BaseModel):
    """``corpus``: None (CPython's ``pydoc_data/topics.py``, shipped with Python), a ``.txt`` file, or
    a folder whose ``*.txt`` files are read in name order. ``model``: where the tokenizer and the
    embedding matrix come from, as ``teacher.model`` names it (``smollm2`` or a local directory /
    ``.gguf`` file). The token stream is cut into train / valid / test in that order (contiguous)."""

    model_config = ConfigDict(extra="forbid")
    corpus: str | None = None
    model: str = "smollm2"
    seq_len: int = Field(128, ge=2)
    valid_fraction: float = Field(0.05, gt=0, lt=0.5)
    test_fraction: float = Field(0.05, gt=0, lt=0.5)
    max_tokens: int | None = Field(None, gt=0, description="keep only the first N tokens of the corpus")
    eval_batch_size: int = Field(16, gt=0)

    @model_validator(mode="after")
    def _room_for_train(self) -> "TextLMParams":
        if self.valid_fraction + self.test_fraction >= 0.5:
            raise ValueError("valid_fraction + test_fraction must leave at least half of the corpus for training")
        return self


class TokenEmbedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    freeze: bool = Field(True, description="keep the LLM's embedding matrix fixed")


class LMHeadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    freeze: bool = Field(True, description="keep the LLM's output matrix fixed")
