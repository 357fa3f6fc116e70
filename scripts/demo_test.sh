#!/usr/bin/env bash
# Evaluate the compressed model zoo with the original's command lines (ResNet-20/56 and VGG entries).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL_PATH=${MODEL_PATH:-$ROOT/model_zoo/compressed}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs/hinge_test/new}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
FAILED=0
# Every entry runs; a missing checkpoint or data set is reported and counted, not fatal.
run() { CUDA_VISIBLE_DEVICES=$GPU python "$ROOT/main_hinge.py" "$@" --dir_save "$SAVE_PATH" --dir_data "$DATA_PATH" \
          || FAILED=$((FAILED + 1)); }

# 1. VGG-16, CIFAR-10
run --save Hinge_VGG_CIFAR10 --template linear3_CIFAR10_VGG --model Hinge_VGG --vgg_type 16 --test_only --pretrain "$MODEL_PATH/vgg_cifar10.pt"
# 5. ResNet-56, CIFAR-10
run --save Hinge_ResNet_Basic_SVD_CIFAR10_L56 --template ResNet --model Hinge_ResNet_Basic_SVD --depth 56 --downsample_type A --test_only --pretrain "$MODEL_PATH/resnet56_cifar10.pt"
# 6. ResNet-20, CIFAR-10
run --save Hinge_ResNet_Basic_SVD_CIFAR10_L20 --template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A --test_only --pretrain "$MODEL_PATH/resnet20_cifar10.pt"
# 7. ResNet-20, CIFAR-100
run --save Hinge_ResNet_Basic_SVD_CIFAR100_L20 --template CIFAR100 --model Hinge_ResNet_Basic_SVD --depth 20 --downsample_type A --test_only --pretrain "$MODEL_PATH/resnet20_cifar100.pt"

[ "$FAILED" -eq 0 ] || { echo "$FAILED evaluation(s) failed" >&2; exit 1; }
