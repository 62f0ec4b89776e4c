"""Parameters of the ``pkd`` method (import-light: pydantic only).

    method:
      name: pkd
      students: [{d_model: 64}, {d_model: 32, n_layers: 2}, ...]   # overrides of student:, one per student
      # or a shrink rule from student: (the first student is the node itself)
      count: 4
      shrink: {d_model: 0.5, d_intermediate: 0.5}
      multiple_of: {d_model: 8, d_intermediate: 8}
      target: residual          # teacher | previous | residual | reweight
      alpha: 0.5                # alpha * L_hard + (1 - alpha) * L_soft
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PKDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    students: list[dict[str, Any]] | None = Field(
        None, description="one entry per student: overrides of the student: node (sizes); None: the shrink rule")
    count: int = Field(4, ge=1, le=32, description="shrink rule: number of students")
    shrink: dict[str, float] = Field(
        default_factory=lambda: {"d_model": 0.5},
        description="shrink rule: each student's integer params are the previous student's times these factors")
    multiple_of: dict[str, int] = Field(default_factory=dict, description="shrink rule: round a param to a multiple")
    target: Literal["teacher", "previous", "residual", "reweight"] = Field(
        "residual", description="what each student learns: the teacher's outputs; the previous student's; "
        "the teacher's outputs on top of the ensemble so far (additive boosting, B-DISTIL); or the teacher's "
        "outputs on a training set resampled toward what the ensemble so far gets wrong")
    alpha: float = Field(0.5, ge=0, le=1, description="alpha * L_hard (task loss) + (1 - alpha) * L_soft")
    soft: str = Field("kd", description="the soft loss term against the target model (kd: classification; "
                                        "mse_to_teacher: regression)")
    stop_metric: float | None = Field(None, description="stop adding students once the ensemble reaches this "
                                                        "validation metric")
    flops_budget: float | None = Field(None, gt=0, description="stop before the students' cumulative FLOPs exceed "
                                                               "this fraction of the teacher's")
    cascade_tolerance: float = Field(0.01, ge=0, description="the cascade's exit threshold is the cheapest whose "
                                                             "validation metric is within this of the full ensemble's")
    cascade_thresholds: list[float] = Field(
        default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999],
        description="confidence thresholds swept for the cascade (accuracy vs average FLOPs)")

    @model_validator(mode="after")
    def _students_or_rule(self) -> "PKDParams":
        if self.students is not None and not self.students:
            raise ValueError("students: the list is empty (one overrides mapping per student)")
        if any(f <= 0 for f in self.shrink.values()):
            raise ValueError(f"shrink: factors must be positive, got {self.shrink}")
        if any(t <= 0 or t > 1 for t in self.cascade_thresholds):
            raise ValueError("cascade_thresholds: each must be in (0, 1]")
        return self

    @property
    def n_students(self) -> int:
        return len(self.students) if self.students is not None else self.count
