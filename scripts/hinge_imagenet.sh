#!/usr/bin/env bash
# The paper's ImageNet experiment (Table 4): ResNet-50 compressed to about 46.5 % of its FLOPs, here on
# torchvision's ResNet-50 with the automatic plan (--model Hinge --base torchvision:resnet50). The original code
# published no ImageNet command line; the flags follow the CIFAR scripts (hinge_resnet.sh) with ImageNet's data
# set, batch and schedule. The baseline is torchvision's ImageNet ResNet-50 state dict (IMAGENET1K_V1), which you
# download yourself into MODEL_PATH:
#   https://download.pytorch.org/models/resnet50-0676ba61.pth
# DATA_PATH holds ImageNet as ImageFolder trees train/ and val/. N_GPUS > 1 runs that many processes through
# torchrun (list the GPUs in GPU, e.g. GPU=0,1,2,3 N_GPUS=4). LEGACY=--legacy_search uses the original code's
# search dynamics instead of the paper's algorithm (README).
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$(cd "$(dirname "$0")/.." && pwd)/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs}
DATA_PATH=${DATA_PATH:-$HOME/projects/data/imagenet}
GPU=${GPU:-0}
N_GPUS=${N_GPUS:-1}
LEGACY=${LEGACY-}
source "$(dirname "$0")/common.sh"
require_files "$MODEL_PATH/resnet50-0676ba61.pth"

main_hinge --save Hinge_torchvision_resnet50_ImageNet_LR0.1r0.01f0.1_svd2_R2e-4_T5e-3_S0.05_A0_E90_l1_Ratio0.465_Balance_Dis \
  --template ImageNet --model Hinge --base torchvision:resnet50 --batch_size 256 --n_GPUs "$N_GPUS" --n_threads 8 \
  --epochs 90 --decay hingestep-30-60 --lr 0.1 --lr_ratio 0.01 --lr_factor 0.1 --optimizer PG --ratio 0.465 \
  --sparsity_regularizer l1 --regularization_factor 2e-4 --init_method svd2 --threshold 5e-3 --annealing_factor 0 \
  --stop_limit 0.05 --layer_balancing --distillation $LEGACY \
  --teacher "$MODEL_PATH/resnet50-0676ba61.pth" --pretrain "$MODEL_PATH/resnet50-0676ba61.pth"
