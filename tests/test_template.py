"""template.py: templates set the data set and per-family defaults as the original does."""

from conftest import make_args


def test_data_set_from_the_template_later_names_win():
    assert make_args('--template CIFAR100_ResNet20').data_train == 'CIFAR100'
    assert make_args('--template CIFAR10').data_test == 'CIFAR10'
    assert make_args('--template Tiny_ImageNet_ResNet50').data_train == 'Tiny_ImageNet'
    assert make_args('--template Demo').data_train == 'Demo'


def test_family_defaults():
    vgg = make_args('--template linear3_CIFAR10_VGG')
    assert (vgg.weight_decay, vgg.base) == (5e-4, 'VGG')
    resnet = make_args('--template CIFAR10_ResNet20')
    assert (resnet.print_every, resnet.base) == (50, 'ResNet')
    dense = make_args('--template DenseNet')
    assert (dense.nesterov, dense.bottleneck, dense.reduction, dense.weight_decay) == (True, False, 1, 1e-4)
    dense_bc = make_args('--template DenseNet_BC')
    assert (dense_bc.bottleneck, dense_bc.reduction) == (True, 0.5)
    tiny = make_args('--template Tiny_ImageNet_ResNet50')
    assert (tiny.depth, tiny.bottleneck) == (50, True)


def test_linear_scaling_multiplies_batch_and_lr_and_warms_up():
    args = make_args('--template CIFAR10 --linear 4 --batch_size 64 --lr 0.1 --decay step-150-225')
    assert args.batch_size == 256 and abs(args.lr - 0.4) < 1e-12
    assert args.decay == 'warmstep-150-225' and args.print_every == 25


def test_no_template_changes_nothing():
    args = make_args('')
    assert (args.data_train, args.weight_decay, args.print_every, args.nesterov) == ('CIFAR10', 1e-4, 100, False)
