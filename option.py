"""Command-line flags: every flag of the original Hinge code (same name, type, default), in readable groups."""

import argparse
from collections.abc import Sequence
from pathlib import Path

import template
from model import AUTO, BASE_NAMES, is_auto
from model_hinge import NAMES as HINGE_NAMES
from model_hinge.config import RANGES as HINGE_RANGES
from model_hinge.config import out_of_range
from utils.errors import UsageError


def _float_pair(text: str) -> tuple:
    """Parse '0.9,0.999' (the --betas value) into a pair of floats."""
    parts = [float(x) for x in str(text).strip('()[] ').split(',') if x.strip()]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError('expected two comma-separated numbers, e.g. 0.9,0.999')
    return tuple(parts)


def _add_hardware(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('hardware')
    g.add_argument('--n_threads', type=int, default=6, help='worker processes for ImageFolder data loading')
    g.add_argument('--cpu', action='store_true', help='run on the CPU even when a GPU is present')
    g.add_argument('--n_GPUs', type=int, default=1,
                   help='number of processes, one per GPU (N > 1 starts them through torchrun; on the CPU, gloo)')
    g.add_argument('--seed', type=int, default=1, help='random seed')
    g.add_argument('--precision', default='single', choices=['single', 'half', 'bf16'],
                   help='single: float32; half/bf16: mixed-precision autocast on the GPU')
    g.add_argument('--compile', action='store_true',
                   help='run the training step through torch.compile (falls back to eager where it fails)')


def _add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('data')
    g.add_argument('--dir_data', default=DATA_ROOT,
                   help='data root: cifar-10-batches-py/, cifar-100-python/ or train/ and val/ folders')
    g.add_argument('--data_train', default=None,
                   help='training set: CIFAR10 (default), CIFAR100, Tiny_ImageNet, ImageNet, Demo')
    g.add_argument('--data_test', default=None, help='test set (default CIFAR10; normally set by --template)')
    g.add_argument('--n_colors', type=int, default=3, help='number of input colour channels')
    g.add_argument('--no_flip', action='store_true', help='disable the horizontal-flip augmentation')
    g.add_argument('--crop', type=int, default=1, help='test-time crops for ImageNet-style data: 1, 5 or 10')


def _add_run_directory(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('run directory and logging')
    g.add_argument('--dir_save', default='runs', help='parent directory of all runs')
    g.add_argument('--save', default='test', help='name of this run (a directory inside --dir_save)')
    g.add_argument('--load', default='', help='resume the run in this directory')
    g.add_argument('--resume', type=int, default=-1, help='with --load: epoch checkpoint to resume (-1: latest)')
    g.add_argument('--reset', action='store_true', help='delete the run directory before starting')
    g.add_argument('--print_every', type=int, default=100, help='log training status every N batches')
    g.add_argument('--save_models', action='store_true', help='also keep a checkpoint of every epoch')
    g.add_argument('--top', type=int, default=1, choices=[1, -1], help='best model by top-1 (1) or top-5 (-1) error')
    g.add_argument('--summary', action='store_true', help='write TensorBoard scalars (needs the tensorboard package)')
    g.add_argument('--test_every', type=int, default=1000, help='accepted for compatibility; testing is per epoch')
    g.add_argument('--compare', type=str, default='', help='accepted for compatibility; unused')


def _add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('model')
    g.add_argument('--model', default='DenseNet',
                   help=f'baseline (VGG, ResNet, DenseNet, ResNeXt, Wide_ResNet), Hinge model ({HINGE_NAMES}) or '
                        f'{AUTO} (the automatic plan of the --base network), case-insensitive')
    g.add_argument('--template', default='', help='preset names combined in one string, see template.py')
    g.add_argument('--pretrain', default='',
                   help='checkpoint (.pt file or run directory) to start from or, with --test_only, to evaluate')
    g.add_argument('--depth', type=int, default=100, help='network depth')
    g.add_argument('--vgg_type', type=str, default='16', help='VGG configuration: 16, 19, A, B, ef')
    g.add_argument('--downsample_type', type=str, default='C', help='ResNet shortcut: A (zero padding) or C (1x1 conv)')
    g.add_argument('--no_bias', action='store_true', help='no bias in the stem/VGG convolutions')
    g.add_argument('--kernel_size', type=int, default=3, help='convolution kernel size')
    g.add_argument('--k', type=int, default=12, help='DenseNet growth rate')
    g.add_argument('--reduction', type=float, default=1, help='DenseNet transition compression')
    g.add_argument('--bottleneck', action='store_true', help='DenseNet-BC bottleneck layers')
    g.add_argument('--widen_factor', type=int, default=2, help='Wide ResNet widening factor')
    g.add_argument('--dropout_rate', type=float, default=0.0, help='Wide ResNet dropout rate')
    g.add_argument('--cardinality', type=int, default=32, help='ResNeXt cardinality')
    g.add_argument('--bottleneck_width', type=int, default=4, help='ResNeXt bottleneck width')
    g.add_argument('--in_channels', type=int, default=64, help='accepted for compatibility; unused')
    g.add_argument('--act', default='relu', help='accepted for compatibility; unused')
    g.add_argument('--base', default='',
                   help=f'with --model {AUTO}: the network to compress, {BASE_NAMES} (e.g. torchvision:resnet50); '
                        'otherwise set by the templates, informational')
    g.add_argument('--base_p', default='', help='set by the templates; informational')
    g.add_argument('--extend', default='', help='accepted for compatibility; unused')
    g.add_argument('--download', action='store_true', help='accepted for compatibility; unused')
    g.add_argument('--width_mult', type=float, default='1.0', help='accepted for compatibility (MobileNet); unused')
    g.add_argument('--mode', type=str, default='large', choices=['large', 'small'],
                   help='accepted for compatibility (MobileNetV3); unused')
    g.add_argument('--regime', type=str, default='large',
                   choices=['x_200mf', 'x_400mf', 'x_600mf', 'x_800mf', 'y_200mf', 'y_400mf', 'y_600mf', 'y_800mf'],
                   help='accepted for compatibility (RegNet); unused')


def _add_training(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('training')
    g.add_argument('--test_only', action='store_true', help='only evaluate --pretrain (or the --load run)')
    g.add_argument('--epochs', type=int, default=300,
                   help='baseline: training epochs; Hinge: epochs of the converging (fine-tuning) stage')
    g.add_argument('--batch_size', type=int, default=128, help='training batch size')
    g.add_argument('--linear', type=int, default=1, help='linear scaling: multiplies batch size and lr, adds warm-up')
    g.add_argument('--lr', type=float, default=0.1, help='learning rate')
    g.add_argument('--decay', default='step-150-225',
                   help='lr schedule: step-a-b, hingestep-a-b or warmstep-a-b (x gamma at epochs a, b, ...)')
    g.add_argument('--gamma', type=float, default=0.1, help='lr decay factor')
    g.add_argument('--optimizer', type=str, default='SGD', choices=['SGD', 'Adam', 'PG', 'APG', 'RMSprop'],
                   help='SGD for baselines; PG (proximal gradient) or SGD (penalty in the loss) for Hinge')
    g.add_argument('--momentum', type=float, default=0.9, help='SGD momentum')
    g.add_argument('--nesterov', action='store_true', help='Nesterov momentum')
    g.add_argument('--betas', type=_float_pair, default=(0.9, 0.999), help='Adam betas, e.g. 0.9,0.999')
    g.add_argument('--epsilon', type=float, default=1e-8, help='Adam/RMSprop epsilon')
    g.add_argument('--weight_decay', type=float, default=1e-4, help='weight decay')
    g.add_argument('--loss', default='1*CE', help="weighted sum of losses, e.g. '1*CE' or '1*CE+0.5*MSE'")


def _add_hinge(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('Hinge compression')
    g.add_argument('--ratio', type=float, default=0.2,
                   help='target ratio of the compressed network (of the FLOPs or the latency: --target), in (0, 1]')
    g.add_argument('--target', default='flops', choices=['flops', 'latency'],
                   help='what --ratio is a fraction of: FLOPs, or the latency measured per layer on this device '
                        '(times kept in the run directory, latency.json)')
    g.add_argument('--latency_batch', type=int, default=64,
                   help='with --target latency or --allocation fastest: the batch size timed')
    g.add_argument('--allocation', default='norm', choices=['norm', 'fastest'],
                   help='how the cut spreads over the layers: thresholded group norms (norm, the paper\'s), or the '
                        'fastest on this device of a few rankings of the groups at the same FLOPs (fastest)')
    g.add_argument('--sparsity_regularizer', type=str, default='l1', choices=['l0', 'l1', 'l1-2', 'l1d2', 'logsum'],
                   help='group-sparsity regularizer, applied through its proximal operator')
    g.add_argument('--regularization_factor', type=float, default=1e-4, help='regularization factor (lambda)')
    g.add_argument('--q', type=float, default=1, help='the q of the l2,q group penalty')
    g.add_argument('--init_method', default='svd2',
                   choices=['svd', 'svd2', 'p-identity', 'p-random', 't-random', 'p-disturbance-u', 'p-disturbance-n'],
                   help='initialisation of the sparsity-inducing matrices')
    g.add_argument('--prox_freq', type=int, default=1, help='apply the proximal operator every N batches')
    g.add_argument('--layer_balancing', action='store_true',
                   help="scale each layer's threshold by the mean group norm of its matrix at the start")
    g.add_argument('--p1_p2_same_ratio', action='store_true',
                   help='the second matrix of a block keeps as many channels as the first')
    g.add_argument('--lr_adjust_method', type=str, choices=['p1', 'p2'], default='p1',
                   help='gradient-ratio lr adjustment: divide the lr of all but the last group (p1) or '
                        'multiply the lr of the last group (p2)')
    g.add_argument('--remain_percentage', type=float, default=0.2,
                   help='minimum fraction of the channels of each layer that is kept')
    g.add_argument('--channel_multiple', type=int, default=1,
                   help='every cut layer keeps a multiple of this many channels (or all of them): widths that are '
                        'multiples of the vector width (8 on CPUs, 8-16 on GPUs) run faster than their FLOPs say')
    g.add_argument('--annealing_factor', type=float, default=0, help='regularization annealing factor (0: off)')
    g.add_argument('--annealing_t1', type=float, default=10, help='penalty level of the first annealing step')
    g.add_argument('--annealing_t2', type=float, default=5, help='penalty level of the second annealing step')
    g.add_argument('--lr_ratio', type=float, default=0.1,
                   help='search stage: lr of the other parameters = lr x lr_ratio')
    g.add_argument('--lr_factor', type=float, default=1.0, help='converging stage: lr = lr x lr_factor')
    g.add_argument('--threshold', type=float, default=5e-3, help='starting nullifying threshold on the group norms')
    g.add_argument('--stop_limit', type=float, default=0.05,
                   help='stop searching once the FLOPs ratio is within this of --ratio')
    g.add_argument('--teacher', type=str, default='',
                   help='baseline checkpoint of the teacher for --distillation and --load_original_param')
    g.add_argument('--distillation', action='store_true', help='distil from --teacher in the converging stage')
    g.add_argument('--load_original_param', action='store_true',
                   help='compress the --teacher parameters with the searched channel selection')
    g.add_argument('--legacy_search', action='store_true',
                   help="reproduce the original code's search dynamics (see README, differences)")
    g.add_argument('--decompose_free', action='store_true',
                   help=f'with --model {AUTO}: decompose the convolutions the automatic plan prunes too (the '
                        "paper's pruning and decomposition with one A, unmerged); default: prune them only")
    g.add_argument('--decompose_coupled', action='store_true',
                   help=f'with --model {AUTO}: decompose the convolutions whose outputs are coupled (residual sums, '
                        "squeeze-excitation scales), the paper's choice; default: prune them together where they "
                        'can be cut together')
    g.add_argument('--start', type=int, default=3, help='accepted for compatibility; unused')


def _add_deployment(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('export and reports')
    g.add_argument('--export', default='', metavar='DIR',
                   help='with --test_only: write the evaluated network to DIR as model.pt2 (torch.export), '
                        'model.torchscript.pt and, with the onnx package, model.onnx, plus export.json')
    g.add_argument('--export_merge', default=None, choices=['plan', 'cheaper'],
                   help="pairs of conv and A folded into one convolution in the export: the plan's (plan, the "
                        'default under --legacy_search) or also every other pair that does not pay, i.e. is faster '
                        '(--target latency) or costs fewer FLOPs folded (cheaper, the default)')
    g.add_argument('--report', nargs='+', default=None, metavar='RUN',
                   help='print a comparison table of these run directories (their results.json) and exit')
    g.add_argument('--csv', action='store_true', help='with --report: print the table as CSV, not Markdown')


def _add_unused_pruning(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('accepted for compatibility with the original, unused')
    g.add_argument('--prune_procedure', default='complete', choices=['complete', 'undergoing', 'final'])
    g.add_argument('--prune_weight_decay', type=float, default=0.001)
    g.add_argument('--prune_decay', type=str, default='step-100-200-300')
    g.add_argument('--prune_lr', type=float, default=0.1)
    g.add_argument('--prune_iteration', type=int, default=250)
    g.add_argument('--prune_solver', default='SGD', choices=['SGD', 'PG'])


# The original's defaults for these three were its authors' home directories; ours are neutral places.
DATA_ROOT = str(Path('~/projects/data').expanduser())


class Parser(argparse.ArgumentParser):
    """argparse, with its errors (unknown flag, bad type or choice) reported like every other bad input."""

    def error(self, message: str):
        raise UsageError(f'{message}; see python main_hinge.py --help.')


def build_parser() -> argparse.ArgumentParser:
    """The parser with all flags of the original, grouped for --help."""
    parser = Parser(
        prog='main_hinge.py', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description='Hinge: group-sparsity compression of CNNs (train/evaluate baselines, compress Hinge_* models).')
    for add in (_add_hardware, _add_data, _add_run_directory, _add_model, _add_training, _add_hinge,
                _add_deployment, _add_unused_pruning):
        add(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line and apply the templates, as the original does."""
    args = build_parser().parse_args(argv)
    typed = {flag: getattr(args, flag) for flag in ('data_train', 'data_test') if getattr(args, flag) is not None}
    for flag, name in typed.items():
        if name not in template.DATA_SETS:
            raise UsageError(f'--{flag} {name} is not a known data set; use one of {", ".join(template.DATA_SETS)}.')
        setattr(args, flag, name)
    for flag in ('data_train', 'data_test'):
        if getattr(args, flag) is None:
            setattr(args, flag, 'CIFAR10')
    base = args.base
    template.set_template(args)
    _keep_base(args, base)
    for flag, name in typed.items():
        if getattr(args, flag) != name:
            raise UsageError(f'--{flag} {name} conflicts with --template {args.template}, which selects '
                             f'{getattr(args, flag)}; drop one of them.')
    return args


def _keep_base(args: argparse.Namespace, base: str) -> None:
    """--base as typed: the network --model Hinge compresses (a template's informational value does not count)
    and nothing for another --model."""
    if base and not is_auto(args.model):
        raise UsageError(f'--base {base} chooses the network --model {AUTO} compresses automatically; use --model '
                         f'{AUTO} or drop --base (--model {args.model} builds its own network).')
    if is_auto(args.model):
        args.base = base


# Allowed ranges of the numeric flags: (low, high, low excluded, high excluded, why), None for no bound.
RANGES = {
    'n_threads': (0, None, False, False, ''), 'n_GPUs': (1, None, False, False, ''),
    'print_every': (1, None, False, False, ''), 'epochs': (0, None, False, False, ''),
    'batch_size': (1, None, False, False, ''), 'linear': (1, None, False, False, ''),
    'lr': (0, None, True, False, ''), 'gamma': (0, 1, True, False, ' (the lr is multiplied by it at each step)'),
    'momentum': (0, 1, False, True, ''), 'weight_decay': (0, None, False, False, ''),
    'epsilon': (0, None, True, False, ''), 'depth': (1, None, False, False, ''),
    'k': (1, None, False, False, ' (the DenseNet growth rate)'), 'reduction': (0, 1, True, False, ''),
    'widen_factor': (1, None, False, False, ''), 'dropout_rate': (0, 1, False, True, ''),
    'cardinality': (1, None, False, False, ''), 'bottleneck_width': (1, None, False, False, ''),
    **HINGE_RANGES,
    'lr_ratio': (0, None, True, False, ''), 'lr_factor': (0, None, True, False, ''),
}


def check(args: argparse.Namespace) -> None:
    """Refuse every flag value that cannot work, before anything is read or written: one sentence that
    names the flag, the value and what would work."""
    a = args
    problems = [out_of_range(f'--{name}', getattr(a, name), *bounds) for name, bounds in RANGES.items()]
    problems += [out_of_range('--betas', b, 0, 1, False, True, '') for b in a.betas]
    if a.kernel_size < 1 or a.kernel_size % 2 == 0:
        problems.append(f'--kernel_size {a.kernel_size} must be an odd number of at least 1 (e.g. 3).')
    if a.n_colors != 3:
        problems.append(f'--n_colors {a.n_colors}: every supported data set has 3 colour channels; use 3.')
    if a.crop not in (1, 5, 10):
        problems.append(f'--crop {a.crop} must be 1, 5 or 10 (test-time crops).')
    elif a.crop != 1 and a.data_test != 'ImageNet':
        problems.append(f'--crop {a.crop}: multi-crop evaluation is for ImageNet; {a.data_test} is evaluated on '
                        'whole images (use 1).')
    if a.resume != -1 and (a.resume < 1 or not a.load):
        problems.append(f'--resume {a.resume} needs --load RUN and an epoch of at least 1 (or -1 for the latest).')
    if a.reset and a.load:
        problems.append('--reset cannot be combined with --load: --reset starts the run directory afresh.')
    if a.nesterov and a.momentum == 0:
        problems.append('--nesterov needs a --momentum greater than 0.')
    if a.allocation == 'fastest' and (a.target != 'flops' or a.legacy_search):
        problems.append('--allocation fastest times rankings of equal FLOPs: it needs --target flops and no '
                        '--legacy_search; use --allocation norm.')
    for flag in ('decompose_free', 'decompose_coupled'):
        if getattr(a, flag) and not is_auto(a.model):
            problems.append(f'--{flag} changes the automatic plan of --model {AUTO}; drop it for --model '
                            f'{a.model}, whose plan is hand-written.')
    for problem in problems:
        if problem:
            raise UsageError(problem)
