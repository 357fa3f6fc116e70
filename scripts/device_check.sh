#!/usr/bin/env bash
# The GPU check in one command (issue 14 §3), meant to take under 8 minutes on one H100: each part has a time
# limit, 7.7 minutes together. Every part writes under OUT, and OUT/summary.md lists each part with its exit status (124: it ran past its
# limit), its seconds and where its output is:
#   suite               the test suite (`pytest -q -m "not slow"`; the suite has no switch that moves its tests to
#                       CUDA, so it runs as it is, on the GPU machine's torch)
#   benchmark-stages    scripts/benchmark.py --section stages on the device
#   benchmark-latency   scripts/benchmark.py --section latency on the device (the small networks, to fit the time)
#   precision-single    main_hinge.py: Hinge_ResNet_Basic_SVD (ResNet-20) from the fixture's baseline to half its
#   precision-bf16      FLOPs on the CIFAR-10 subset, short, with --precision single, then bf16; OUT/precision.md
#                       puts their figures side by side
#   original            the side by side with the original code on the device (scripts/benchmark.py --original)
#                       when ORIGINAL names its checkout (PYLIB: folders with its extra packages); otherwise our
#                       side alone (scripts/benchmark_original.py --side ours)
#   peers               scripts/compare_peers.py at one seed on PEERS_NETS; without Torch-Pruning's methods when the
#                       package cannot be imported (WHEELS: a folder with its wheel, installed under OUT first)
#
#   bash scripts/device_check.sh [--dry-run] [OUT]      (OUT defaults to runs/device_check)
#
# --dry-run runs every part on the CPU, one thread (about a minute of CPU time in all): three fast test files, the
# benchmarks with their smallest options, the precision runs on 65 training images, our side of the side by side
# on 3 batches of 8, and compare_peers --dry-run on a ResNet-8.
# Variables: PYTHON (python3), HINGE_SHARED (shared/ inside the checkout where there is one, else ../shared), DATA
# (its CIFAR-10 subset; both must travel to the GPU machine), DEVICE (cuda; cpu with --dry-run), ORIGINAL, PYLIB,
# WHEELS, PEERS_NETS (resnet20 resnet18), and the limits in seconds T_SUITE (150) T_STAGES (30) T_LATENCY (60)
# T_PRECISION (30 per run) T_ORIGINAL (60) T_PEERS (100) (600 each with --dry-run). The parts use no torch API
# newer than torch 2.11 / torchvision 0.26.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DRY=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
  shift
fi
mkdir -p "${1:-$ROOT/runs/device_check}" || exit 1
OUT=$(cd "${1:-$ROOT/runs/device_check}" && pwd)
PY=${PYTHON:-python3}
if [ -d "$ROOT/shared" ]; then HINGE_SHARED=${HINGE_SHARED:-$ROOT/shared}; fi
HINGE_SHARED=${HINGE_SHARED:-$ROOT/../shared}
DATA=${DATA:-$HINGE_SHARED/data/cifar10-subset}
BASELINE=$HINGE_SHARED/spec/fixtures/resnet20/baseline.pt
export HINGE_SHARED PYTHONUNBUFFERED=1
cd "$ROOT" || exit 1

if [ "$DRY" = 1 ]; then
  DEVICE=${DEVICE:-cpu}
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  LIMIT=600                      # the limits are the GPU's budget; a busy CPU may need longer for the dry run
  SUITE=(tests/test_schedule.py tests/test_model_hinge_prox.py tests/test_template.py)
  STAGES=(--depth 8 --batch_size 8 --threads 1)
  LATENCY=(--size small --models Hinge_ResNet_Basic_SVD --latency_batch 8 --repeat 1 --runtimes eager,pt2 --threads 1)
  PRECISION=(--epochs 1 --batch_size 16 --regularization_factor 5)
  SIDE=(--depths 20 --batch_sizes 8 --batches 2 --warmup 1 --repeats 1 --no_epoch --no_suite --threads 1 --n_threads 0)
  OURS=(--batch_size 8 --batches 2 --warmup 1)
  PEERS=(--dry-run --nets resnet8 --threads 1)
else
  DEVICE=${DEVICE:-cuda}
  LIMIT=""
  SUITE=()
  STAGES=()
  LATENCY=(--size small)
  PRECISION=(--epochs 3 --batch_size 128 --regularization_factor 5e-2)
  SIDE=(--depths 20 --batch_sizes 64 128 --batches 20 --warmup 3 --repeats 1 --no_epoch --no_suite)
  OURS=(--batch_size 64 --batches 20 --warmup 3)
  read -r -a NETS <<<"${PEERS_NETS:-resnet20 resnet18}"
  PEERS=(--seeds 0 --nets "${NETS[@]}")
fi
CPU_FLAG=()
if [ "$DEVICE" = cpu ]; then CPU_FLAG=(--cpu); fi

SUMMARY=$OUT/summary.md
{
  echo "# Device check"
  echo
  echo "- Command: \`bash scripts/device_check.sh $([ "$DRY" = 1 ] && echo '--dry-run ')$OUT\`, $(date '+%Y-%m-%d %H:%M')"
  echo "- Machine: $("$PY" -c 'import os, torch, torchvision
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"{gpu}; {os.cpu_count()} CPUs; torch {torch.__version__}, torchvision {torchvision.__version__}")')"
  echo "- Device: $DEVICE; data: $DATA"
  echo
  echo "| part | status | seconds | output | note |"
  echo "|---|---|---|---|---|"
} >"$SUMMARY"

# part NAME LIMIT OUTPUT NOTE COMMAND...: COMMAND under a time limit, its console in OUT/NAME.log; adds its row.
part() {
  local name=$1 limit=$2 output=$3 note=$4 start=$SECONDS status
  shift 4
  echo "== $name: $*"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  status=$?
  echo "   status $status"
  echo "| $name | $status | $((SECONDS - start)) | $output$name.log | $note |" >>"$SUMMARY"
}

# tiny_cifar DIR: 65 training and 64 test images of the subset in the CIFAR-10 python layout (the dry run's data).
tiny_cifar() {
  "$PY" - "$DATA/cifar-10-batches-py" "$1/cifar-10-batches-py" <<'PYTHON'
import pathlib, pickle, sys
source, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
target.mkdir(parents=True, exist_ok=True)
for name, count in [(f'data_batch_{i}', 13) for i in range(1, 6)] + [('test_batch', 64)]:
    with open(source / name, 'rb') as f:
        batch = pickle.load(f, encoding='latin1')
    with open(target / name, 'wb') as f:
        pickle.dump({'data': batch['data'][:count], 'labels': list(batch['labels'][:count])}, f)
PYTHON
}

# compare_precisions: the two precision runs' figures side by side, in OUT/precision.md.
compare_precisions() {
  "$PY" - "$OUT/precision" >"$OUT/precision.md" <<'PYTHON'
import json, pathlib, sys
runs = {}
for p in ('single', 'bf16'):
    path = pathlib.Path(sys.argv[1]) / p / 'results.json'
    runs[p] = json.loads(path.read_text()) if path.is_file() else {}
keys = ('flops_ratio', 'params_ratio', 'search_epochs', 'baseline_top1_err', 'compressed_top1_err', 'top1_err',
        'images_per_second', 'compression_seconds')
print('| figure | single | bf16 |\n|---|---|---|')
for key in keys:
    print(f'| {key} | {runs["single"].get(key, "–")} | {runs["bf16"].get(key, "–")} |')
PYTHON
}

part suite "${T_SUITE:-${LIMIT:-150}}" "" "" "$PY" -m pytest -q -p no:cacheprovider "${SUITE[@]}"
part benchmark-stages "${T_STAGES:-${LIMIT:-30}}" "benchmark.md, " "" \
  "$PY" scripts/benchmark.py --device "$DEVICE" --section stages --out "$OUT/benchmark.md" "${STAGES[@]}"
part benchmark-latency "${T_LATENCY:-${LIMIT:-60}}" "benchmark.md, " "" \
  "$PY" scripts/benchmark.py --device "$DEVICE" --section latency --out "$OUT/benchmark.md" "${LATENCY[@]}"

PRECISION_DATA=$DATA
if [ "$DRY" = 1 ]; then
  PRECISION_DATA=$OUT/tiny-cifar
  tiny_cifar "$PRECISION_DATA"
fi
for p in single bf16; do
  part "precision-$p" "${T_PRECISION:-${LIMIT:-30}}" "precision.md, precision/$p/, " "" \
    "$PY" main_hinge.py --template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A \
    --pretrain "$BASELINE" --dir_data "$PRECISION_DATA" --dir_save "$OUT/precision" --save "$p" --reset \
    "${CPU_FLAG[@]}" --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --decay hingestep-100 --optimizer PG --ratio 0.5 \
    --sparsity_regularizer l1 --init_method svd2 --threshold 5e-3 --stop_limit 0.1 --p1_p2_same_ratio \
    --layer_balancing --print_every 1000 --precision "$p" "${PRECISION[@]}"
done
compare_precisions

if [ -n "${ORIGINAL:-}" ]; then
  read -r -a LIBS <<<"${PYLIB:-}"
  part original "${T_ORIGINAL:-${LIMIT:-60}}" "benchmark.md, " "" "$PY" scripts/benchmark.py --original "$ORIGINAL" \
    --data "$DATA" --device "$DEVICE" --out "$OUT/benchmark.md" --pylib "${LIBS[@]}" "${SIDE[@]}"
else
  mkdir -p "$OUT/original"
  part original "${T_ORIGINAL:-${LIMIT:-60}}" "original_ours.json, " "ours alone: ORIGINAL not set" \
    "$PY" scripts/benchmark_original.py --side ours --task stages --depth 20 --json "$OUT/original_ours.json" \
    --work "$OUT/original" --original none --data "$DATA" --device "$DEVICE" "${OURS[@]}"
fi

if ! "$PY" -c 'import torch_pruning' 2>/dev/null && [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --target "$OUT/site" "$WHEELS"/torch_pruning-*.whl &&
    export PYTHONPATH=$OUT/site${PYTHONPATH:+:$PYTHONPATH}
fi
NOTE=""
if ! "$PY" -c 'import torch_pruning' 2>/dev/null; then
  PEERS+=(--methods baseline hinge)
  NOTE="Torch-Pruning not installed: its methods left out"
fi
part peers "${T_PEERS:-${LIMIT:-100}}" "peers.md, peers/peers.json, " "$NOTE" \
  "$PY" scripts/compare_peers.py --device "$DEVICE" --out "$OUT/peers" --doc "$OUT/peers.md" "${PEERS[@]}"
echo
cat "$SUMMARY"
