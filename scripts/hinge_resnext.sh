#!/usr/bin/env bash
# The paper's ResNeXt compressions (Hinge_RESNEXT), flag for flag as the original's scripts/hinge_resnext.sh:
# ResNeXt-164 and ResNeXt-20 (32x1), CIFAR-10 and CIFAR-100. --legacy_search reproduces the published code's
# search dynamics and compression layout; LEGACY= runs the paper's algorithm (README).
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$(cd "$(dirname "$0")/.." && pwd)/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
LEGACY=${LEGACY---legacy_search}
source "$(dirname "$0")/common.sh"
require_files "$MODEL_PATH/resnext164_cifar10.pt" "$MODEL_PATH/resnext164_cifar100.pt" \
  "$MODEL_PATH/resnext20_cifar10.pt" "$MODEL_PATH/resnext20_cifar100.pt"

main_hinge --save Hinge_RESNEXT_CIFAR10_L164_LR0.1r0.01f1_R2e-4_T5e-3_S0.1_A0_E300_l1_Ratio0.4438_Balance_Dis \
  --template CIFAR10 --model Hinge_RESNEXT --depth 164 --cardinality 32 --bottleneck_width 1 --batch_size 64 \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG --ratio 0.4438 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --threshold 5e-3 --annealing_factor 0 \
  --stop_limit 0.1 --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnext164_cifar10.pt" --pretrain "$MODEL_PATH/resnext164_cifar10.pt"

main_hinge --save Hinge_RESNEXT_CIFAR100_L164_LR0.1r0.01f1_R2e-4_T5e-3_S0.1_A0_E300_l1_Ratio0.4769_Balance_Dis \
  --template CIFAR100 --model Hinge_RESNEXT --depth 164 --cardinality 32 --bottleneck_width 1 --batch_size 64 \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG --ratio 0.4769 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --threshold 5e-3 --annealing_factor 0 \
  --stop_limit 0.1 --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnext164_cifar100.pt" --pretrain "$MODEL_PATH/resnext164_cifar100.pt"

main_hinge --save Hinge_RESNEXT_CIFAR10_L20_LR0.1r0.01f1_R2e-4_T5e-3_S0.1_A2_E300_l1_Ratio0.5921_Balance_Dis \
  --template CIFAR10 --model Hinge_RESNEXT --depth 20 --cardinality 32 --bottleneck_width 1 --batch_size 64 \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG --ratio 0.5921 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --threshold 5e-3 \
  --annealing_factor 2 --annealing_t1 75 --annealing_t2 60 \
  --stop_limit 0.1 --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnext20_cifar10.pt" --pretrain "$MODEL_PATH/resnext20_cifar10.pt"

main_hinge --save Hinge_RESNEXT_CIFAR100_L20_LR0.1r0.01f1_R2e-4_T5e-3_S0.1_A2_E300_l1_Ratio0.5351_Balance_Dis \
  --template CIFAR100 --model Hinge_RESNEXT --depth 20 --cardinality 32 --bottleneck_width 1 --batch_size 64 \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG --ratio 0.5351 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --threshold 5e-3 \
  --annealing_factor 2 --annealing_t1 100 --annealing_t2 75 \
  --stop_limit 0.1 --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnext20_cifar100.pt" --pretrain "$MODEL_PATH/resnext20_cifar100.pt"
