#!/usr/bin/env bash
# The paper's ResNet compressions, flag for flag as the original's scripts/hinge_resnet.sh:
# ResNet-56 (CIFAR-10), ResNet-20 (CIFAR-100, CIFAR-10) with Hinge_ResNet_Basic_SVD, ResNet-164 (CIFAR-100,
# CIFAR-10) with Hinge_RESNET_BOTTLENECK. --legacy_search reproduces the published code's search dynamics;
# LEGACY= runs the paper's algorithm (README, differences from the original code).
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$(cd "$(dirname "$0")/.." && pwd)/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
LEGACY=${LEGACY---legacy_search}
source "$(dirname "$0")/common.sh"
require_files "$MODEL_PATH/resnet56_b128e164.pt" "$MODEL_PATH/resnet20_cifar100.pt" "$MODEL_PATH/resnet20_cifar10.pt" \
  "$MODEL_PATH/resnet164_cifar100.pt" "$MODEL_PATH/resnet164_cifar10.pt"

main_hinge --save Hinge_ResNet_Basic_SVD_CIFAR10_L56_LR0.1r0.01f1_svd2_R4e-4_T5e-3_S0.1_A2_E300_l1d2_Ratio0.5_Same_Balance_Dis \
  --template ResNet --model Hinge_ResNet_Basic_SVD --depth 56 --batch_size 64 --downsample_type A \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG --ratio 0.5 \
  --sparsity_regularizer l1d2 --regularization_factor 4e-4 --init_method svd2 --threshold 5e-3 --annealing_factor 2 \
  --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnet56_b128e164.pt" --pretrain "$MODEL_PATH/resnet56_b128e164.pt"

main_hinge --save Hinge_ResNet_Basic_SVD_CIFAR100_L20_LR0.1r0.01f1_svd2_R2e-4_T5e-3_S0.1_A2_E300_l1_Ratio0.3298_Same_Balance_Dis \
  --template CIFAR100_ResNet20 --model Hinge_ResNet_Basic_SVD --depth 20 --batch_size 64 --downsample_type A \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG --ratio 0.3298 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --init_method svd2 --threshold 5e-3 \
  --annealing_factor 2 --annealing_t1 30 --annealing_t2 25 \
  --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnet20_cifar100.pt" --pretrain "$MODEL_PATH/resnet20_cifar100.pt"

main_hinge --save Hinge_ResNet_Basic_SVD_CIFAR10_L20_LR0.1r0.01f1_svd2_R2e-4_T5e-3_S0.1_A2_E300_l1_Ratio0.4516_Same_Balance_Dis \
  --template CIFAR10_ResNet20 --model Hinge_ResNet_Basic_SVD --depth 20 --batch_size 64 --downsample_type A \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG --ratio 0.4516 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --init_method svd2 --threshold 5e-3 \
  --annealing_factor 2 --annealing_t1 20 --annealing_t2 15 \
  --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnet20_cifar10.pt" --pretrain "$MODEL_PATH/resnet20_cifar10.pt"

main_hinge --save Hinge_RESNET_BOTTLENECK_CIFAR100_L164_LR0.1r0.01f1_R2e-4_T1e-3_S0.1_A0_E300_l1_Ratio0.5533_Same_Balance_Dis \
  --template CIFAR100_ResNet164 --model Hinge_RESNET_BOTTLENECK --depth 164 --no_bias --batch_size 64 \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG --ratio 0.5533 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --threshold 1e-3 --annealing_factor 0 \
  --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnet164_cifar100.pt" --pretrain "$MODEL_PATH/resnet164_cifar100.pt"

main_hinge --save Hinge_RESNET_BOTTLENECK_CIFAR10_L164_LR0.1r0.01f1_R2e-4_T1e-3_S0.1_A0_E300_l1_Ratio0.5353_Same_Balance_Dis \
  --template CIFAR10_ResNet164 --model Hinge_RESNET_BOTTLENECK --depth 164 --no_bias --batch_size 64 \
  --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG --ratio 0.5353 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --threshold 1e-3 --annealing_factor 0 \
  --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnet164_cifar10.pt" --pretrain "$MODEL_PATH/resnet164_cifar10.pt"
