#!/usr/bin/env bash
# Evaluate the baseline model zoo, every entry of the original's scripts/baseline_test.sh (main.py there,
# main_hinge.py here), flag for flag.
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$(cd "$(dirname "$0")/.." && pwd)/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs/hinge_test}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
source "$(dirname "$0")/common.sh"
require_files "$MODEL_PATH"/{vgg,densenet_cifar10,resnet164_cifar10,resnet164_cifar100,resnet56_b128e164}.pt \
  "$MODEL_PATH"/{resnet20_cifar10,resnet20_cifar100,resnext164_cifar10,resnext164_cifar100,resnext20_cifar10}.pt \
  "$MODEL_PATH"/{resnext20_cifar100,wide_resnet_cifar100}.pt

# 1. VGG-16, CIFAR-10
main_hinge --save VGG_CIFAR10 --template linear3_CIFAR10_VGG --model VGG --vgg_type 16 --test_only \
  --pretrain "$MODEL_PATH/vgg.pt"
# 2. DenseNet-40, CIFAR-10
main_hinge --save DENSENET_CIFAR10_L40 --template DenseNet --model DENSENET --depth 40 --test_only \
  --pretrain "$MODEL_PATH/densenet_cifar10.pt"
# 3. ResNet-164, CIFAR-10
main_hinge --save ResNet_CIFAR10_L164 --template CIFAR10 --model ResNet --depth 164 --no_bias --test_only \
  --pretrain "$MODEL_PATH/resnet164_cifar10.pt"
# 4. ResNet-164, CIFAR-100
main_hinge --save ResNet_CIFAR100_L164 --template CIFAR100 --model ResNet --depth 164 --no_bias --test_only \
  --pretrain "$MODEL_PATH/resnet164_cifar100.pt"
# 5. ResNet-56, CIFAR-10
main_hinge --save ResNet_CIFAR10_L56 --template CIFAR10 --model ResNet --depth 56 --downsample_type A --test_only \
  --pretrain "$MODEL_PATH/resnet56_b128e164.pt"
# 6. ResNet-20, CIFAR-10
main_hinge --save ResNet_CIFAR10_L20 --template CIFAR10 --model ResNet --depth 20 --downsample_type A --test_only \
  --pretrain "$MODEL_PATH/resnet20_cifar10.pt"
# 7. ResNet-20, CIFAR-100
main_hinge --save ResNet_CIFAR100_L20 --template CIFAR100 --model ResNet --depth 20 --downsample_type A --test_only \
  --pretrain "$MODEL_PATH/resnet20_cifar100.pt"
# 8. ResNeXt-164, CIFAR-10
main_hinge --save ResNeXt_CIFAR10_L164 --template CIFAR10 --model ResNeXt --depth 164 --cardinality 32 \
  --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext164_cifar10.pt"
# 9. ResNeXt-164, CIFAR-100
main_hinge --save ResNeXt_CIFAR100_L164 --template CIFAR100 --model ResNeXt --depth 164 --cardinality 32 \
  --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext164_cifar100.pt"
# 10. ResNeXt-20, CIFAR-10
main_hinge --save ResNeXt_CIFAR10_L20 --template CIFAR10 --model ResNeXt --depth 20 --cardinality 32 \
  --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext20_cifar10.pt"
# 11. ResNeXt-20, CIFAR-100
main_hinge --save ResNeXt_CIFAR100_L20 --template CIFAR100 --model ResNeXt --depth 20 --cardinality 32 \
  --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext20_cifar100.pt"
# 12. Wide ResNet-16-10, CIFAR-100
main_hinge --save Wide_ResNet_CIFAR100 --template CIFAR100_Wide_ResNet --model Wide_ResNet --depth 16 --widen_factor 10 \
  --test_only --pretrain "$MODEL_PATH/wide_resnet_cifar100.pt"
