#!/usr/bin/env bash
# Offline end-to-end demo on the embedded data set (CPU, a few minutes):
# train a ResNet-20 baseline briefly, then compress it with Hinge_ResNet_Basic_SVD to half its FLOPs
# (search, threshold search, compression, fine-tuning) and print a summary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SAVE_PATH=${SAVE_PATH:-$ROOT/runs}
DEVICE_FLAG=${DEVICE_FLAG:---cpu}

python "$ROOT/main_hinge.py" --template Demo --model ResNet --depth 20 --downsample_type A $DEVICE_FLAG \
  --epochs 6 --batch_size 64 --lr 0.1 --decay step-4 --print_every 20 \
  --save demo_baseline --dir_save "$SAVE_PATH" --reset

python "$ROOT/main_hinge.py" --template Demo --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A $DEVICE_FLAG \
  --pretrain "$SAVE_PATH/demo_baseline/model/model_latest.pt" \
  --batch_size 64 --epochs 3 --decay hingestep-50 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG \
  --ratio 0.5 --sparsity_regularizer l1 --regularization_factor 0.05 --init_method svd2 --threshold 5e-3 \
  --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing --print_every 20 \
  --save demo_hinge --dir_save "$SAVE_PATH" --reset
