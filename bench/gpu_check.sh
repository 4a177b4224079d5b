#!/usr/bin/env bash
# GPU variants of the benchmarks as ONE prepared script for the device machine (bare image: Python 3.12 with
# torch + CUDA, numpy, safetensors, httpx, prometheus-client; no fairseq, FastAPI, pydantic, soundfile, soxr).
#
#   here, once:  bash bench/gpu_check.sh --fetch-wheels   # the missing packages as cp312 wheels in .whl/ (~35 MB)
#   device:      bash bench/gpu_check.sh                  # carry .whl; writes $OUT/*; < 12 min on an H200
#                GPU_STEPS=precision bash bench/gpu_check.sh   # only the precision steps (< 4 min): fits one call
#
# On the device it: installs .whl/*.whl into /tmp/site; records the machine (env.txt); runs bench_server.py on
# cuda (P1 over 1,000 resident tasks, P2, P4, memory per task, CUDA-vs-CPU parity, upload -> servable and
# latency under load against a live uvicorn server on cuda), bench_prompted_lm.py --device cuda, and the precision
# modes (bench/precision_gate.py: bf16 agreement gate on CUDA; bench/bench_precision.py: ratios vs fp32). Each step
# has its own time limit; a failed step is logged and the next one still runs. Exit status: failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(fairseq-fixed==0.12.3.1 hydra-core==1.3.2 omegaconf==2.3.0 bitarray==3.12.3 cffi==2.1.1 pycparser==3.12
        soundfile==0.14.0 soxr==1.1.0 fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic-core==2.50.5
        pydantic-settings==2.16.3 python-dotenv==1.2.4 uvicorn==0.54.0 annotated-types==0.8.0
        typing-inspection==0.4.5 python-multipart==0.0.34 opentelemetry-api==1.45.2 typing-extensions==4.16.0)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p .whl
  py=${PYTHON:-python3}
  plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  for w in "${WHEELS[@]}"; do
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
      -d .whl "$w" || exit 1
  done
  # antlr4-python3-runtime (omegaconf's parser) is published as an sdist only: build its pure-Python wheel here.
  "$py" -m pip wheel -q --no-deps --no-build-isolation -w .whl antlr4-python3-runtime==4.9.3 || exit 1
  ls -la .whl
  exit 0
fi

OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
fails=0
step() {  # step NAME SECONDS CMD... : stdout -> $OUT/NAME.md, stderr -> $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  [[ $name =~ ${GPU_STEPS:-.} ]] || return 0  # GPU_STEPS=REGEX runs only the steps it matches
  echo "== $name (limit ${limit}s) $(date +%T)"
  timeout "$limit" "$@" >"$OUT/$name.md" 2>"$OUT/$name.log"
  local rc=$?
  if ((rc != 0)); then
    echo "!! $name failed (exit $rc; 124 = time limit)"; tail -n 20 "$OUT/$name.log"; fails=$((fails + 1))
  fi
  cat "$OUT/$name.md"
}

t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 90; }
export PYTHONPATH="/tmp/site:$PWD"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda,
torch.cuda.get_device_name(0)); print("cpu threads", torch.get_num_threads())'
  nproc
  python3 -c 'import fastapi, uvicorn, pydantic_settings, soundfile, soxr, fairseq; print("imports ok")'
  echo "wheels installed in $(( $(date +%s) - t0 )) s"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step bench_server_cuda 330 python3 bench/bench_server.py --device cuda --threads 8 --rows 64 --p2-jobs 256 \
  --repeats 5 --uploads 30 --load-requests 400 --concurrency 32 --load-tasks 16 --load-time-limit 60
step bench_prompted_lm_cuda 120 python3 bench/bench_prompted_lm.py --device cuda --threads 8 --rows 16 --repeats 5
# precision (issue 18): the agreement gate of bf16 on CUDA vs fp32 on CUDA (no corpus on the device: speech-like
# clips, the demo packages), then the modes' ratios against fp32 in one run
step precision_gate_cuda 120 python3 bench/precision_gate.py --device cuda --threads 8 --modes bf16,fp32/bf16 \
  --synthetic 300 --out "$OUT/precision_gate_cuda.json"
step bench_precision_cuda 150 python3 bench/bench_precision.py --device cuda --threads 8 --modes fp32,bf16,fp32/bf16 \
  --gslm-modes fp32,bf16 --p4-modes fp32,bf16 --rows 64 --p2-warm 256 --p2-cold 64 --repeats 3
echo "done in $(( $(date +%s) - t0 )) s, $fails failed step(s)"
exit "$fails"
