#!/usr/bin/env bash
# The paper's Wide ResNet-16-10 compressions (Hinge_WIDE_RESNET, CIFAR-100, FLOPs ratios 0.5731 and 0.7556),
# flag for flag as the original's scripts/hinge_wide_resnet.sh. --legacy_search reproduces the published
# code's search dynamics; LEGACY= runs the paper's algorithm (README).
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$(cd "$(dirname "$0")/.." && pwd)/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
LEGACY=${LEGACY---legacy_search}
source "$(dirname "$0")/common.sh"
require_files "$MODEL_PATH/wide_resnet_cifar100.pt"

main_hinge --save Hinge_WIDE_RESNET_CIFAR100_LR0.1r0.01f0.1_p-identity_R4e-4_T5e-3_S0.1_A2_E200_l1_Ratio0.5731_Same_Balance \
  --template CIFAR100_Wide_ResNet --model Hinge_WIDE_RESNET --depth 16 --widen_factor 10 --batch_size 64 \
  --epochs 200 --decay hingestep-60-120-160 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG --ratio 0.5731 \
  --sparsity_regularizer l1 --regularization_factor 4e-4 --init_method p-identity --threshold 5e-3 \
  --annealing_factor 2 --annealing_t1 400 --annealing_t2 350 --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing $LEGACY \
  --teacher "$MODEL_PATH/wide_resnet_cifar100.pt" --pretrain "$MODEL_PATH/wide_resnet_cifar100.pt"

main_hinge --save Hinge_WIDE_RESNET_CIFAR100_LR0.1r0.01f0.1_p-identity_R4e-4_T5e-3_S0.1_A2_E200_l1_Ratio0.7556_Same_Balance \
  --template CIFAR100_Wide_ResNet --model Hinge_WIDE_RESNET --depth 16 --widen_factor 10 --batch_size 64 \
  --epochs 200 --decay hingestep-60-120-160 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG --ratio 0.7556 \
  --sparsity_regularizer l1 --regularization_factor 4e-4 --init_method p-identity --threshold 5e-3 \
  --annealing_factor 2 --annealing_t1 400 --annealing_t2 350 --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing $LEGACY \
  --teacher "$MODEL_PATH/wide_resnet_cifar100.pt" --pretrain "$MODEL_PATH/wide_resnet_cifar100.pt"
