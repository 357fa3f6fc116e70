"""Templates: substrings of --template that set data sets and per-family defaults, as in the original."""

import re
from argparse import Namespace

from utils.errors import UsageError

DATA_SETS = ('CIFAR10', 'CIFAR100', 'ImageNet', 'Tiny_ImageNet', 'Demo')
KEYWORDS = DATA_SETS + ('Wide_ResNet', 'ResNet', 'DenseNet', 'VGG', 'ICCV', 'AlexNet', 'MobileNet', 'BC', 'linear')


def _set_data(args: Namespace) -> None:
    """Later matches win: 'CIFAR100' overrides 'CIFAR10', 'Tiny_ImageNet' overrides 'ImageNet'."""
    for key in ('CIFAR10', 'CIFAR100', 'ImageNet', 'Tiny_ImageNet', 'Demo'):
        if key in args.template:
            args.data_train = args.data_test = key


def _set_family(args: Namespace) -> None:
    t = args.template
    if 'VGG' in t:
        args.base = args.base_p = 'VGG_ICCV' if 'ICCV' in t else 'VGG'
        args.weight_decay = 5e-4
    if 'AlexNet' in t:
        args.base = args.base_p = 'AlexNet'
        args.weight_decay = 1e-4
        args.batch_size = 64
        args.print_every = 50
    if 'MobileNet' in t:
        args.data_train = args.data_test = 'ImageNet'
    if 'ResNet' in t:
        args.base = args.base_p = 'ResNet'
        args.print_every = 50
        if 'ResNet164' in t:
            args.base = args.base_p = 'ResNet164'
        if 'ResNet18' in t:
            args.depth = 18
            args.base = args.base_p = 'ResNet18'
        elif 'ResNet50' in t:
            args.depth = 50
            args.bottleneck = True
        elif 'ResNet101' in t:
            args.depth = 101
            args.bottleneck = True
    if 'Wide_ResNet' in t:
        args.base = args.base_p = 'Wide_ResNet'
        args.print_every = 50
    if 'DenseNet' in t:
        args.bottleneck = 'BC' in t
        args.reduction = 0.5 if 'BC' in t else 1
        args.base = args.base_p = 'DenseNet'
        args.weight_decay = 1e-4
        args.print_every = 50
        args.nesterov = True


def _set_linear_scaling(args: Namespace) -> None:
    """--linear N > 1: N times the batch and the lr, with a warm-up schedule."""
    if args.linear > 1:
        args.batch_size *= args.linear
        args.lr *= args.linear
        if 'warm' not in args.decay:
            args.decay = 'warm' + args.decay
        args.print_every = max(1, args.print_every // args.linear)


def check_template(template: str) -> None:
    """Every word of a template must be a known preset (numbers such as the depth in ResNet20 may follow):
    a misspelt data set would otherwise silently train on the default one."""
    rest = template
    for keyword in sorted(KEYWORDS, key=len, reverse=True):
        rest = rest.replace(keyword, ' ')
    unknown = re.findall(r'[A-Za-z]\w*', rest.replace('_', ' '))
    if unknown:
        raise UsageError(f'--template {template}: {unknown[0]!r} is not a known template part; combine '
                         f'{", ".join(KEYWORDS)} (data sets: {", ".join(DATA_SETS)}), e.g. CIFAR100_ResNet20.')


def set_template(args: Namespace) -> None:
    """Apply every preset named in --template to the parsed flags (in place)."""
    check_template(args.template)
    _set_data(args)
    _set_family(args)
    _set_linear_scaling(args)
