#!/usr/bin/env bash
# The real runs of docs/real_runs.md: for each Hinge model added with the compression plans, a short
# baseline on the CIFAR-10 subset, a search to --ratio 0.5 (the original's dynamics, as the reproduction
# scripts), compression and 4 converging epochs, on the CPU. Shortened: smaller networks than the paper's
# where an epoch of the paper's would take minutes here, few epochs, much stronger regularization.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA_PATH=${DATA_PATH:-$ROOT/../shared/data/cifar10-subset}
SAVE_PATH=${SAVE_PATH:-$ROOT/runs/real}
run() { python "$ROOT/main_hinge.py" "$@" --cpu --dir_data "$DATA_PATH" --dir_save "$SAVE_PATH" --reset --print_every 1000; }
# baseline EPOCHS DECAY ARGS...: a short baseline (12 epochs for the ResNets, 6 for DenseNet and WRN).
baseline() {
  local epochs=$1 decay=$2
  shift 2
  run "$@" --batch_size 64 --lr 0.1 --epochs "$epochs" --decay "$decay"
}
hinge() {
  local base=$1
  shift
  run "$@" --pretrain "$SAVE_PATH/$base" --teacher "$SAVE_PATH/$base" --distillation --batch_size 64 --epochs 4 \
    --decay hingestep-50 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG --ratio 0.5 --stop_limit 0.1 \
    --sparsity_regularizer l1 --regularization_factor 3e-2 --threshold 5e-3 --layer_balancing --legacy_search
}

baseline 12 step-8-11 --save base_resnet56b --template CIFAR10 --model ResNet --depth 56 --bottleneck
hinge base_resnet56b --save hinge_bottleneck --template CIFAR10 --model Hinge_RESNET_BOTTLENECK --depth 56 \
  --bottleneck --p1_p2_same_ratio

baseline 12 step-8-11 --save base_resnext20 --template CIFAR10 --model ResNeXt --depth 20 --cardinality 32 --bottleneck_width 1
hinge base_resnext20 --save hinge_resnext --template CIFAR10 --model Hinge_RESNEXT --depth 20 --cardinality 32 \
  --bottleneck_width 1

baseline 6 step-4-5 --save base_densenet22 --template CIFAR10_DenseNet --model DenseNet --depth 22
hinge base_densenet22 --save hinge_densenet_svd --template CIFAR10_DenseNet --model Hinge_DENSENET_SVD --depth 22 \
  --init_method svd2
hinge base_densenet22 --save hinge_densenet --template CIFAR10_DenseNet --model Hinge_DenseNet --depth 22 \
  --init_method svd2

baseline 6 step-4-5 --save base_wrn16_2 --template CIFAR10_Wide_ResNet --model Wide_ResNet --depth 16 --widen_factor 2
hinge base_wrn16_2 --save hinge_wide_resnet --template CIFAR10_Wide_ResNet --model Hinge_WIDE_RESNET --depth 16 \
  --widen_factor 2 --init_method p-identity --p1_p2_same_ratio
