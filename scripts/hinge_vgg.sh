#!/usr/bin/env bash
# The paper's VGG-16 compression on CIFAR-10 (Hinge_VGG, FLOPs ratio 0.609). --legacy_search reproduces the
# search dynamics of the published code; drop it for the paper's algorithm (see README, differences).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL_PATH=${MODEL_PATH:-$ROOT/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
LEGACY=${LEGACY:---legacy_search}

CUDA_VISIBLE_DEVICES=$GPU python "$ROOT/main_hinge.py" --save Hinge_VGG_CIFAR10_Ratio0.6090 \
  --template linear3_CIFAR10_VGG --model Hinge_VGG --vgg_type 16 --batch_size 64 \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG --ratio 0.6090 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --init_method svd2 --threshold 5e-2 \
  --annealing_factor 2 --annealing_t1 400 --annealing_t2 200 --stop_limit 0.1 $LEGACY \
  --teacher "$MODEL_PATH/vgg.pt" --pretrain "$MODEL_PATH/vgg.pt" \
  --dir_save "$SAVE_PATH" --dir_data "$DATA_PATH"
