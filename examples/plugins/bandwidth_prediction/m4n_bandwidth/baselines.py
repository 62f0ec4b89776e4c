"""Rule baselines: the last value, and the harmonic mean of the last few (RobustMPC's estimate)."""


class LastValue:
    name = "last_value"

    def fit(self, task) -> None:
        pass

    def predict(self, batch):
        x = batch["x"][:, :, 0]  # (B, history)
        return x[:, -1:].expand(-1, self._horizon(batch))

    @staticmethod
    def _horizon(batch) -> int:
        return batch["y"].shape[1]


class HarmonicMean(LastValue):
    name = "harmonic_mean"

    def __init__(self, window: int):
        self.window = window

    def predict(self, batch):
        recent = batch["x"][:, -self.window:, 0].clamp(min=1e-4)  # (B, window)
        hm = recent.shape[1] / (1.0 / recent).sum(1, keepdim=True)  # (B, 1)
        return hm.expand(-1, self._horizon(batch))
