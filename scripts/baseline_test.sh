#!/usr/bin/env bash
# Evaluate the baseline model zoo with the original's command lines (main.py -> main_hinge.py).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL_PATH=${MODEL_PATH:-$ROOT/model_zoo/baseline}
SAVE_PATH=${SAVE_PATH:-$HOME/projects/logs/hinge_test}
DATA_PATH=${DATA_PATH:-$HOME/projects/data}
GPU=${GPU:-0}
FAILED=0
# Every entry runs; a missing checkpoint or data set is reported and counted, not fatal.
run() { CUDA_VISIBLE_DEVICES=$GPU python "$ROOT/main_hinge.py" "$@" --dir_save "$SAVE_PATH" --dir_data "$DATA_PATH" \
          || FAILED=$((FAILED + 1)); }

# 1. VGG-16, CIFAR-10
run --save VGG_CIFAR10 --template linear3_CIFAR10_VGG --model VGG --vgg_type 16 --test_only --pretrain "$MODEL_PATH/vgg.pt"
# 2. DenseNet-40, CIFAR-10
run --save DENSENET_CIFAR10_L40 --template DenseNet --model DENSENET --depth 40 --test_only --pretrain "$MODEL_PATH/densenet_cifar10.pt"
# 3. ResNet-164, CIFAR-10
run --save ResNet_CIFAR10_L164 --template CIFAR10 --model ResNet --depth 164 --no_bias --test_only --pretrain "$MODEL_PATH/resnet164_cifar10.pt"
# 4. ResNet-164, CIFAR-100
run --save ResNet_CIFAR100_L164 --template CIFAR100 --model ResNet --depth 164 --no_bias --test_only --pretrain "$MODEL_PATH/resnet164_cifar100.pt"
# 5. ResNet-56, CIFAR-10
run --save ResNet_CIFAR10_L56 --template CIFAR10 --model ResNet --depth 56 --downsample_type A --test_only --pretrain "$MODEL_PATH/resnet56_b128e164.pt"
# 6. ResNet-20, CIFAR-10
run --save ResNet_CIFAR10_L20 --template CIFAR10 --model ResNet --depth 20 --downsample_type A --test_only --pretrain "$MODEL_PATH/resnet20_cifar10.pt"
# 7. ResNet-20, CIFAR-100
run --save ResNet_CIFAR100_L20 --template CIFAR100 --model ResNet --depth 20 --downsample_type A --test_only --pretrain "$MODEL_PATH/resnet20_cifar100.pt"
# 8. ResNeXt-164, CIFAR-10
run --save ResNeXt_CIFAR10_L164 --template CIFAR10 --model ResNeXt --depth 164 --cardinality 32 --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext164_cifar10.pt"
# 9. ResNeXt-164, CIFAR-100
run --save ResNeXt_CIFAR100_L164 --template CIFAR100 --model ResNeXt --depth 164 --cardinality 32 --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext164_cifar100.pt"
# 10. ResNeXt-20, CIFAR-10
run --save ResNeXt_CIFAR10_L20 --template CIFAR10 --model ResNeXt --depth 20 --cardinality 32 --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext20_cifar10.pt"
# 11. ResNeXt-20, CIFAR-100
run --save ResNeXt_CIFAR100_L20 --template CIFAR100 --model ResNeXt --depth 20 --cardinality 32 --bottleneck_width 1 --test_only --pretrain "$MODEL_PATH/resnext20_cifar100.pt"
# 12. Wide ResNet-16-10, CIFAR-100
run --save Wide_ResNet_CIFAR100_0.5 --template CIFAR100_Wide_ResNet --model Wide_ResNet --depth 16 --widen_factor 10 --test_only --pretrain "$MODEL_PATH/wide_resnet_cifar100.pt"

[ "$FAILED" -eq 0 ] || { echo "$FAILED evaluation(s) failed" >&2; exit 1; }
