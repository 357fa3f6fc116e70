#!/usr/bin/env bash
# The paper's VGG-16 compression (Hinge_VGG, CIFAR-10, FLOPs ratio 0.609), flag for flag as the original's
# scripts/hinge_vgg.sh. --legacy_search reproduces the published code's search dynamics; LEGACY= runs the
# paper's algorithm (README).
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$(cd "$(dirname "$0")/.." && pwd)/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
LEGACY=${LEGACY---legacy_search}
source "$(dirname "$0")/common.sh"
require_files "$MODEL_PATH/vgg.pt"

main_hinge --save Hinge_VGG_CIFAR10_LR0.1r0.01f0.1_svd2_R2e-4_T5e-2_S0.1_A2_E300_l1_Ratio0.6090 \
  --template linear3_CIFAR10_VGG --model Hinge_VGG --vgg_type 16 --batch_size 64 \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG --ratio 0.6090 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --init_method svd2 --threshold 5e-2 \
  --annealing_factor 2 --annealing_t1 400 --annealing_t2 200 --stop_limit 0.1 $LEGACY \
  --teacher "$MODEL_PATH/vgg.pt" --pretrain "$MODEL_PATH/vgg.pt"
