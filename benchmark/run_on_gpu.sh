#!/usr/bin/env bash
# The GPU measurements of "How fast is it?", as made on a lent GPU machine, after ci/gpu_runner.sh filled .venv from the GPU
# runner's versions (GPU_PYTHON: the Python it used). Each server is started, measured and stopped in turn.
#
#   bash benchmark/run_on_gpu.sh one-gpu [server ...]     # the small model on one GPU
#   bash benchmark/run_on_gpu.sh production [server ...]  # QwQ-32B's shape (benchmark/production_shape.py), TP=2
#   TENSOR_PARALLEL_SIZE=1 bash benchmark/run_on_gpu.sh production  # the same on one GPU (fits an H200, not an H100)
#
# Servers: "bare vLLM", "standard ingress, stream batching 50 ms (default)" (Ray's defaults) and "tutorial: direct
# streaming" by default; naming some runs those alone and merges them into the results file.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${GPU_PYTHON:-.venv/bin/python}"
export PATH="$(dirname "$python"):$PATH"  # its ray and serve
what="$1" && shift
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=("bare vLLM" "standard ingress, stream batching 50 ms (default)" \
  "tutorial: direct streaming")
case "$what" in
  one-gpu)
    "$python" -m benchmark --side-by-side --config serve_tiny_reasoner_gpu.yaml --servers "${servers[@]}" \
      --concurrency 1 16 --requests 16 32 --repeats 2 --merge --out benchmark/results/one_gpu.json ;;
  production)
    tp="${TENSOR_PARALLEL_SIZE:-2}"
    "$python" -m benchmark.production_shape /tmp/qwq-32b-shape --tensor-parallel-size "$tp"
    "$python" -m benchmark --side-by-side --config /tmp/qwq-32b-shape.yaml --servers "${servers[@]}" \
      --concurrency 1 16 64 --requests 1 16 64 --repeats 1 --max-tokens 2000 --ignore-eos --warmup-tokens 64 \
      --merge --out "benchmark/results/production_tp$tp.json" ;;
  *) echo "usage: $0 one-gpu|production [server ...]"; exit 2 ;;
esac
