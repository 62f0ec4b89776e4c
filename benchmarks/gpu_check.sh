#!/usr/bin/env bash
# The GPU checks of the kernels and the decision path, in one go, on a CUDA machine whose Python
# already has torch, triton, transformers and peft (e.g. a lent H100/H200 with no network):
#
#   bash benchmarks/gpu_check.sh WHEELS_DIR OUT_DIR
#
# WHEELS_DIR holds what that Python lacks, made on a machine with pip access (docs/gpu.md):
#   * this project as a wheel (``pip wheel --no-deps -w WHEELS_DIR .``: its entry points register
#     the plugins), and wheels for that Python of what it lacks (pydantic and its needs), all
#     installed to a private folder on PYTHONPATH;
#   * mamba_ssm-2.3.2.post1.tar.gz, the source distribution. Only its Triton kernels are used
#     (mamba_chunk_scan_combined, selective_state_update): its CUDA extension takes longer to build
#     than a short lease allows, and its top-level __init__ imports that extension, so the
#     unpacked copy gets an __init__ that only sets the version.
# Data: $MAMBA4NET_DATA (the VP bench reads a task batch from it).
#
# Each step has its own time limit and its own log; one failing does not stop the next.
# Results in OUT_DIR: kernels_cuda.{json,md}, bench_vp_cuda.{json,md} (CUDA-graph decisions),
# bench_vp_fused_cuda.json (the same student deciding eagerly), pytest.log, and everything else
# (plots, logs) in gpu_check.tar.gz.
set -u
WHEELS=$(cd "${1:?wheels folder}" && pwd)
OUT=$(mkdir -p "${2:?output folder}" && cd "$2" && pwd)
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$(dirname "$0")/.."
step() { echo "=== $(date +%T) $*"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl
mkdir -p "$WORK/ms" && tar xzf "$WHEELS"/mamba_ssm-*.tar.gz -C "$WORK/ms"
MS=$(ls -d "$WORK"/ms/mamba_ssm-*)
printf '__version__ = "%s"\n' "${MS##*mamba_ssm-}" > "$MS/mamba_ssm/__init__.py"
export PYTHONPATH="$WORK/site:$MS"
M4N=(python3 -m mamba4net.core.cli)
python3 - <<'EOF'
import torch, triton, transformers
from mamba4net.core.kernels import available_kernels
print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__,
      torch.cuda.get_device_name())
for op in ("ssd_scan", "ssd_step", "stream_decoder", "kd_loss"):
    print(op, available_kernels(op, "cuda"))
EOF

step "tests on the GPU: Triton kernels compiled, CUDA-graph decoder"
timeout 100 python3 -m pytest -v -p no:cacheprovider tests/test_triton_kernels.py tests/test_graph_decoder.py \
  > "$OUT/pytest.log" 2>&1; echo "pytest exit $?"; tail -5 "$OUT/pytest.log"

# SmolLM2-135M's shape with random weights (speed does not depend on them; no hub, no GGUF here)
SMOLLM2='{hidden_size: 576, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, intermediate_size: 1536}'
BENCH=(examples/vp.yaml --set runtime.device=cuda --set teacher.model=random --set teacher.num_layers=30 --set "teacher.random_config=$SMOLLM2"
       --set benchmark.warmup=8 --set runtime.kernels.ssd_scan=ssd_scan_triton --no-progress)

step "VP bench on the GPU: student (CUDA-graph decisions) vs a 30-layer SmolLM2-shaped teacher"
timeout 120 "${M4N[@]}" bench "${BENCH[@]}" --seq-lens 1024,4096,8192 --history-lens 16,1024 --repeats 30 \
  --out "$WORK/bench_vp" > "$WORK/bench_vp.log" 2>&1; echo "exit $?"; tail -15 "$WORK/bench_vp.log"
cp "$WORK/bench_vp/bench.json" "$OUT/bench_vp_cuda.json" && cp "$WORK/bench_vp/bench.md" "$OUT/bench_vp_cuda.md"

step "the same student deciding eagerly (fused decoder, no graphs)"
timeout 60 "${M4N[@]}" bench "${BENCH[@]}" --set runtime.kernels.stream_decoder=stream_decoder_torch_fused \
  --seq-lens 1024 --history-lens 16,1024 --repeats 30 --roles student --no-memory \
  --out "$WORK/bench_vp_fused" > "$WORK/bench_vp_fused.log" 2>&1; echo "exit $?"; tail -6 "$WORK/bench_vp_fused.log"
cp "$WORK/bench_vp_fused/bench.json" "$OUT/bench_vp_fused_cuda.json"

step "kernel benchmark"
timeout 150 python3 benchmarks/kernels.py --device cuda --lengths 1024 4096 8192 --chunks 16 \
  --train-max-len 1024 --repeats 20 --ref-repeats 1 --out "$OUT" --name kernels_cuda 2>&1 | tail -40

step "pack"
tar czf "$OUT/gpu_check.tar.gz" -C "$WORK" --exclude=site --exclude=ms . 2>/dev/null
ls -la "$OUT"
