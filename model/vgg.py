"""VGG with BatchNorm blocks (CIFAR/Tiny-ImageNet layout) and the optional three-layer classifier."""

from argparse import Namespace

import torch
import torch.nn as nn

from model.common import BasicBlock, default_conv, init_vgg, num_classes, require_data
from utils.errors import UsageError

CONFIGS = {
    'A': [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    'B': [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    '16': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
    '19': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
    'ef': [32, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 256, 256, 256, 'M', 256, 256, 256, 'M'],
}


class VGG(nn.Module):
    def __init__(self, args: Namespace):
        super().__init__()
        if args.vgg_type not in CONFIGS:
            raise UsageError(f'--vgg_type {args.vgg_type} is unknown; use one of {", ".join(CONFIGS)}.')
        require_data('VGG', args.data_train, ('CIFAR10', 'CIFAR100', 'Demo', 'Tiny_ImageNet', 'ImageNet'))
        n_classes = num_classes(args.data_train)
        tiny = args.data_train == 'Tiny_ImageNet'
        layers, channels = [], args.n_colors
        for i, v in enumerate(CONFIGS[args.vgg_type]):
            if v == 'M':
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            elif args.data_train == 'ImageNet':
                layers += [default_conv(channels, v, 3), nn.ReLU(inplace=True)]
                channels = v
            else:
                stride = 2 if i == 0 and tiny else 1
                layers.append(BasicBlock(channels, v, args.kernel_size, stride=stride, bias=not args.no_bias))
                channels = v
        self.features = nn.Sequential(*layers)
        if args.data_train == 'ImageNet':
            self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(4096, n_classes))
        elif tiny or 'linear3' in args.template:
            self.classifier = nn.Sequential(nn.Linear(channels, channels), nn.Linear(channels, channels),
                                            nn.Linear(channels, n_classes))
        else:
            self.classifier = nn.Linear(channels, n_classes)
        init_vgg(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def build(args: Namespace) -> nn.Module:
    return VGG(args)
