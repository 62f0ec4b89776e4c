"""Decisions from a student exported by ``mamba4net export RUN_DIR``, with numpy and onnxruntime only.

    decider = Decider("RUN_DIR/deploy/student.json")   # the manifest beside the .onnx file
    decider.reset(batch=1)                              # a new episode: zero state
    out = decider.decide(rtg=..., state=..., ...)       # one decision; the state advances

The manifest lists the inputs (names, shapes, dtypes), the output, and for a stateful model every
state tensor, with the axis along which an attention layer's KV cache grows (it starts empty).
This file imports neither torch nor mamba4net: copy it to the device with the .onnx and .json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


class Decider:
    def __init__(self, manifest: str | Path, threads: int = 1):
        self.path = Path(manifest)
        self.manifest = json.loads(self.path.read_text())
        model = self.path.parent / self.manifest["onnx"]
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        if digest != self.manifest["sha256"]:
            raise ValueError(f"{model}: sha256 {digest[:12]}... does not match the manifest's; re-export it")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # one decision is small: 1 thread is fastest
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.output = self.manifest["output"]
        self.state_names = list(self.manifest["state"])
        self.reset(1)

    @property
    def constants(self) -> dict:
        return self.manifest.get("constants", {})

    def reset(self, batch: int = 1) -> None:
        """Zero state for ``batch`` streams (KV caches empty)."""
        self.state = {name: np.zeros((batch, *spec["shape"]), dtype=spec["dtype"])
                      for name, spec in self.manifest["state"].items()}

    def decide(self, **inputs: np.ndarray) -> np.ndarray:
        """One decision for every stream; the inputs are named as in the manifest, batch first."""
        feed = {name: np.asarray(inputs[name], dtype=spec["dtype"]) for name, spec in self.manifest["inputs"].items()}
        feed.update(self.state)
        outs = self.session.run([self.output] + [f"new_{n}" for n in self.state_names], feed)
        self.state = dict(zip(self.state_names, outs[1:]))
        return outs[0]
