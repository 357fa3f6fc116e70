#!/usr/bin/env bash
# The paper's ResNet-20/56 compressions (Hinge_ResNet_Basic_SVD). --legacy_search reproduces the search
# dynamics of the published code; drop it for the paper's algorithm (see README, differences).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL_PATH=${MODEL_PATH:-$ROOT/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
LEGACY=${LEGACY:---legacy_search}
run() { CUDA_VISIBLE_DEVICES=$GPU python "$ROOT/main_hinge.py" "$@" $LEGACY --dir_save "$SAVE_PATH" --dir_data "$DATA_PATH"; }

COMMON="--batch_size 64 --epochs 300 --decay hingestep-150-225 --lr 0.1 --lr_ratio 0.01 --lr_factor 1 --optimizer PG
        --init_method svd2 --threshold 5e-3 --annealing_factor 2 --stop_limit 0.1 --p1_p2_same_ratio --layer_balancing
        --distillation"

# ResNet-56, CIFAR-10, FLOPs ratio 0.5, l1/2 regularizer
run --save Hinge_ResNet_Basic_SVD_CIFAR10_L56_Ratio0.5 --template ResNet --model Hinge_ResNet_Basic_SVD --depth 56 \
  --downsample_type A $COMMON --ratio 0.5 --sparsity_regularizer l1d2 --regularization_factor 4e-4 \
  --teacher "$MODEL_PATH/resnet56_b128e164.pt" --pretrain "$MODEL_PATH/resnet56_b128e164.pt"

# ResNet-20, CIFAR-100, FLOPs ratio 0.3298
run --save Hinge_ResNet_Basic_SVD_CIFAR100_L20_Ratio0.3298 --template CIFAR100_ResNet20 --model Hinge_ResNet_Basic_SVD \
  --depth 20 --downsample_type A $COMMON --ratio 0.3298 --sparsity_regularizer l1 --regularization_factor 2e-4 \
  --annealing_t1 30 --annealing_t2 25 \
  --teacher "$MODEL_PATH/resnet20_cifar100.pt" --pretrain "$MODEL_PATH/resnet20_cifar100.pt"

# ResNet-20, CIFAR-10, FLOPs ratio 0.4516
run --save Hinge_ResNet_Basic_SVD_CIFAR10_L20_Ratio0.4516 --template CIFAR10_ResNet20 --model Hinge_ResNet_Basic_SVD \
  --depth 20 --downsample_type A $COMMON --ratio 0.4516 --sparsity_regularizer l1 --regularization_factor 2e-4 \
  --annealing_t1 20 --annealing_t2 15 \
  --teacher "$MODEL_PATH/resnet20_cifar10.pt" --pretrain "$MODEL_PATH/resnet20_cifar10.pt"
