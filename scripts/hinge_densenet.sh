#!/usr/bin/env bash
# The paper's DenseNet-40 compression (Hinge_DENSENET_SVD, CIFAR-10), flag for flag as the original's
# scripts/hinge_densenet.sh. --legacy_search reproduces the published code's search dynamics; LEGACY= runs
# the paper's algorithm (README).
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$(cd "$(dirname "$0")/.." && pwd)/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
LEGACY=${LEGACY---legacy_search}
source "$(dirname "$0")/common.sh"
require_files "$MODEL_PATH/densenet_cifar10.pt"

main_hinge --save Hinge_DENSENET_SVD_CIFAR10_LR0.1r0.01f0.1_svd2_R2e-4_T1e-3_S0.1_A2_E300_l1_Ratio0.5522_Dis \
  --template CIFAR10_DenseNet --model Hinge_DENSENET_SVD --depth 40 --batch_size 64 \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG --ratio 0.5522 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --init_method svd2 --threshold 1e-3 --annealing_factor 2 \
  --stop_limit 0.1 --distillation $LEGACY \
  --teacher "$MODEL_PATH/densenet_cifar10.pt" --pretrain "$MODEL_PATH/densenet_cifar10.pt"
