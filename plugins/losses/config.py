"""Parameters of the built-in loss terms."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskLossParams(_Strict):
    """The task's own supervised loss (L1/MSE for regression, the RL loss for policies...)."""


class KDParams(_Strict):
    """alpha * T^2 * KL(teacher || student) on softened logits (paper eq. 3)."""

    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(1.0, ge=0)


class MSEToTeacherParams(_Strict):
    """Mean squared error between the student's and the teacher's regression outputs."""


class HiddenAlignParams(_Strict):
    """Align the student's last hidden states to the teacher's through a learned projection."""

    metric: Literal["mse", "cosine"] = "mse"
    tokens: Literal["all", "last"] = "all"
