"""A third-party plugin: the "damped velocity" viewport baseline.

Heads keep turning for a moment, then slow down: extrapolate the last velocity with a per-step decay
``gamma`` (gamma = 0 is "no motion", gamma = 1 is constant velocity). Import-light, as every plugin
module should be: torch is only imported when the baseline predicts.
"""

from pydantic import BaseModel, ConfigDict, Field

from mamba4net.api import hookimpl

MAMBA4NET_API = 1  # the plugin API this plugin was written for; another one is refused by name


class DampedVelocityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gamma: float = Field(0.8, ge=0.0, le=1.0)  # velocity kept from one step to the next


class DampedVelocity:
    name = "damped_velocity"

    def __init__(self, gamma: float, fut_window: int):
        self.gamma, self.fut_window = gamma, fut_window

    def fit(self, task) -> None:  # nothing to learn
        pass

    def predict(self, batch):
        import torch

        h = batch["history"]  # (B, H, 3) normalised offsets from the last observed sample
        v = h[:, -1] - h[:, -2]  # (B, 3) last step's velocity
        k = torch.arange(1, self.fut_window + 1, dtype=h.dtype)  # (F,)
        travelled = (self.gamma ** k).cumsum(0)  # (F,) sum_{j<=k} gamma^j
        return travelled[None, :, None] * v[:, None, :]  # (B, F, 3)


def build(params: DampedVelocityParams, *, task):
    return DampedVelocity(params.gamma, task.fut_window if task is not None else 20)


@hookimpl
def mamba4net_register_baselines(register):
    register("damped_velocity", build, params=DampedVelocityParams, task="vp")
