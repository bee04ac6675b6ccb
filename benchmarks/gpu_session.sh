#!/usr/bin/env bash
# Issue 14's GPU measurements in one pass, for a GPU machine lent for a few minutes:
#   1. training throughput per format (benchmarks/train_throughput.py --formats all), alone on the GPU;
#   2. supernet quality (benchmarks/supernet_quality.py), one process per family, side by side,
#      each writing its row as JSON after every part (a family cut off by the time budget still
#      leaves what it measured; `supernet_quality.py --from-json` renders the rows);
#   3. the tests marked gpu, alongside 2.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [BUDGET_S] [DEVICE]
#
# Everything lands in OUT_DIR: log.txt (all output, each line tagged), throughput.json, rows/*.json
# and benchmarks.md (docs/benchmarks.md with the GPU throughput section written). Needs python3
# with torch, numpy, pydantic and pyyaml (pytest for 3). SMOKE=1 shrinks every part to seconds
# (with DEVICE=cpu it checks this script on a machine without a GPU).
set -u
out=${1:?usage: gpu_session.sh OUT_DIR [BUDGET_S] [DEVICE]}
budget=${2:-540}
device=${3:-cuda}
mkdir -p "$out/rows"
log="$out/log.txt"
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
tag() { sed -u "s/^/[$1] /" >>"$log"; }
export PYTHONUNBUFFERED=1
if [ "${SMOKE:-0}" = 1 ]; then
  tp=(--formats int8 mxfp4 --steps 2 --warmup 1 --repeats 1)
  sq=(--recipe custom --epochs 0.2 --train-limit 1000 --finetune-steps 3)
else
  tp=(--formats all --steps 10 --warmup 3 --repeats 2)
  sq=(--recipe full)
fi
{ nvidia-smi -L 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nproc; } 2>&1 | tag env

# 1. throughput per format, nothing else running (eager, fp32: what the fake quantizers cost)
timeout $(($(left) / 4)) python3 benchmarks/train_throughput.py --device "$device" "${tp[@]}" --batch-size 64 \
  --amp off --compile off --save "$out/throughput.json" 2>&1 | tag throughput

# 2. the families side by side, each with a share of the CPU cores; 3. the gpu tests alongside
threads=$(($(nproc) / 5 > 0 ? $(nproc) / 5 : 1))
for space in mbconv_fmnist resnet_fmnist vit_fmnist seq_fmnist; do
  timeout $(($(left) - 20)) python3 benchmarks/supernet_quality.py --spaces "$space" "${sq[@]}" --device "$device" \
    --amp off --compile off --threads "$threads" --progress-s 30 --json-out "$out/rows" --no-write 2>&1 \
    | tag "$space" &
done
timeout $(($(left) / 2)) python3 -m pytest -q -m gpu -p no:cacheprovider tests/unit/test_supernet.py \
  tests/unit/test_profiling.py tests/contracts/test_backend_contracts.py 2>&1 | tag tests
wait
cp docs/benchmarks.md "$out/benchmarks.md"
echo "done in $(($(date +%s) - start)) s" | tag end
