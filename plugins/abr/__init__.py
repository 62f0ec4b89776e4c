"""Adaptive bitrate streaming: the Pensieve/Genet chunk-level simulator on the FCC traces, the rule
and learned baselines (BBA, RobustMPC, rate-based, Pensieve), the experience pool and the
return-conditioned sequence policies of teacher and student (docs/abr.md)."""
