"""Viewport prediction (VP) for 360-degree video: Jin2022 traces, NetLLM's splits, wrapped MAE.

Files: ``config`` (parameter models), ``data`` (traces -> samples), ``metrics``, ``encoder``,
``head``, ``baselines``, ``task`` and ``plugin`` (the entry point, import-light).
"""
