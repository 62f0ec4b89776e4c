"""Parameters of the ``mohawk`` method and of its stages (import-light: pydantic only).

    method: {name: mohawk, layers: evenly, stages: [matrix, hidden, distill]}
    initializer: {name: cwr, strategy: copy, decay: true, D: 0.0}   # Q->C, K->B, V->x, O->out_proj
    train:
      mohawk_matrix:  {steps: ..., lr: 1.0e-4, trainable: [backbone.layers.*.mixer]}
      mohawk_hidden:  {steps: ..., lr: 1.0e-4, trainable: [backbone.layers.*.mixer]}
      mohawk_distill: {steps: ..., lr: 1.0e-5, trainable: ["*"]}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mamba4net.core.schema import TrainParams

LayerRule = Literal["evenly", "last_k", "first_k"]
StageName = Literal["matrix", "hidden", "distill"]


class MohawkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: LayerRule | list[Annotated[int, Field(ge=0)] | None] = Field(
        "evenly", description="teacher layer of each student layer, by CWR's rules (or an explicit list, "
                              "null for none)")
    stages: list[StageName] = Field(
        default_factory=lambda: ["matrix", "hidden", "distill"],
        description="which MOHAWK stages run (e.g. [distill] alone: the stage-3-only ablation)")
    adapt_teacher: bool = Field(False, description="first adapt the teacher to the task (LoRA), as Mamba4Net "
                                                   "does: for networking tasks, whose heads are new")


class MatrixParams(TrainParams):
    """Stage 1: the Frobenius distance between each paired mixer's matrix and the teacher's
    attention matrix (per head, averaged over batch and heads, summed over layers)."""

    lr: float = Field(1e-4, gt=0)
    trainable: list[str] = Field(default_factory=lambda: ["backbone.layers.*.mixer"],
                                 description="parameter-name patterns of the student that train")
    block_rows: int = Field(256, gt=0, description="rows of the L x L matrices built at once")


class HiddenParams(TrainParams):
    """Stage 2: each paired student block maps the teacher's input of its layer to the teacher's
    output (L2 norm per token, averaged over tokens, summed over layers)."""

    lr: float = Field(1e-4, gt=0)
    trainable: list[str] = Field(default_factory=lambda: ["backbone.layers.*.mixer"])


class DistillParams(TrainParams):
    """Stage 3: end-to-end distillation with the stage's loss terms (default: KD at temperature 1)."""

    lr: float = Field(1e-5, gt=0)
    trainable: list[str] = Field(default_factory=lambda: ["*"])
