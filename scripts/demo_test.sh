#!/usr/bin/env bash
# Evaluate the compressed model zoo, all 13 entries of the original's scripts/demo_test.sh, flag for flag.
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$(cd "$(dirname "$0")/.." && pwd)/model_zoo/compressed}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs/hinge_test/new}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
source "$(dirname "$0")/common.sh"
require_files "$MODEL_PATH"/{vgg_cifar10,densenet_cifar10,resnet164_cifar10,resnet164_cifar100,resnet56_cifar10}.pt \
  "$MODEL_PATH"/{resnet20_cifar10,resnet20_cifar100,resnext164_cifar10,resnext164_cifar100,resnext20_cifar10}.pt \
  "$MODEL_PATH"/{resnext20_cifar100,wrn_cifar100_5,wrn_cifar100_7}.pt

# 1. VGG, CIFAR-10
main_hinge --save Hinge_VGG_CIFAR10 --template linear3_CIFAR10_VGG --model Hinge_VGG --vgg_type 16 --test_only \
  --pretrain "$MODEL_PATH/vgg_cifar10.pt"
# 2. DenseNet-40, CIFAR-10
main_hinge --save Hinge_DENSENET_SVD_CIFAR10_L40 --template DenseNet --model Hinge_DENSENET_SVD --depth 40 --test_only \
  --pretrain "$MODEL_PATH/densenet_cifar10.pt"
# 3. ResNet-164, CIFAR-10
main_hinge --save Hinge_RESNET_BOTTLENECK_CIFAR10_L164 --template CIFAR10 --model Hinge_RESNET_BOTTLENECK --depth 164 \
  --no_bias --test_only --pretrain "$MODEL_PATH/resnet164_cifar10.pt"
# 4. ResNet-164, CIFAR-100
main_hinge --save Hinge_RESNET_BOTTLENECK_CIFAR100_L164 --template CIFAR100 --model Hinge_RESNET_BOTTLENECK --depth 164 \
  --no_bias --test_only --pretrain "$MODEL_PATH/resnet164_cifar100.pt"
# 5. ResNet-56, CIFAR-10
main_hinge --save Hinge_ResNet_Basic_SVD_CIFAR10_L56 --template ResNet --model Hinge_ResNet_Basic_SVD --depth 56 \
  --downsample_type A --test_only --pretrain "$MODEL_PATH/resnet56_cifar10.pt"
# 6. ResNet-20, CIFAR-10
main_hinge --save Hinge_ResNet_Basic_SVD_CIFAR10_L20 --template CIFAR10 --model Hinge_ResNet_Basic_SVD --depth 20 \
  --downsample_type A --test_only --pretrain "$MODEL_PATH/resnet20_cifar10.pt"
# 7. ResNet-20, CIFAR-100
main_hinge --save Hinge_ResNet_Basic_SVD_CIFAR100_L20 --template CIFAR100 --model Hinge_ResNet_Basic_SVD --depth 20 \
  --downsample_type A --test_only --pretrain "$MODEL_PATH/resnet20_cifar100.pt"
# 8. ResNeXt-164, CIFAR-10
main_hinge --save Hinge_RESNEXT_CIFAR10_L164 --template CIFAR10 --model Hinge_RESNEXT --depth 164 --cardinality 32 \
  --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext164_cifar10.pt"
# 9. ResNeXt-164, CIFAR-100
main_hinge --save Hinge_RESNEXT_CIFAR100_L164 --template CIFAR100 --model Hinge_RESNEXT --depth 164 --cardinality 32 \
  --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext164_cifar100.pt"
# 10. ResNeXt-20, CIFAR-10
main_hinge --save Hinge_RESNEXT_CIFAR10_L20 --template CIFAR10 --model Hinge_RESNEXT --depth 20 --cardinality 32 \
  --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext20_cifar10.pt"
# 11. ResNeXt-20, CIFAR-100
main_hinge --save Hinge_RESNEXT_CIFAR100_L20 --template CIFAR100 --model Hinge_RESNEXT --depth 20 --cardinality 32 \
  --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext20_cifar100.pt"
# 12. Wide ResNet-16-10, CIFAR-100, 0.5
main_hinge --save Hinge_WIDE_RESNET_CIFAR100_0.5 --template CIFAR100_Wide_ResNet --model Hinge_WIDE_RESNET --depth 16 \
  --widen_factor 10 --test_only --pretrain "$MODEL_PATH/wrn_cifar100_5.pt"
# 13. Wide ResNet-16-10, CIFAR-100, 0.7
main_hinge --save Hinge_WIDE_RESNET_CIFAR100_0.7 --template CIFAR100_Wide_ResNet --model Hinge_WIDE_RESNET --depth 16 \
  --widen_factor 10 --test_only --pretrain "$MODEL_PATH/wrn_cifar100_7.pt"
