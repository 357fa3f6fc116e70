"""option.py: every flag of the original, with its default, in readable groups."""

import json

import pytest

import option
from utils.errors import UsageError


def _flags(shared):
    return json.loads((shared / 'spec' / 'flags.json').read_text())['main_hinge']


# Whose defaults were the original authors' home directories (replaced by neutral places).
PERSONAL = {'dir_data', 'dir_save', 'teacher'}


def test_every_original_flag_parses_with_its_default(shared):
    args = option.parse_args([])
    for flag in _flags(shared):
        if flag['dest'] in PERSONAL:
            assert '/home/' not in getattr(args, flag['dest']) and 'ofsoundof' not in getattr(args, flag['dest'])
            continue
        default = flag['default']
        if flag['type'] == 'float' and isinstance(default, str):
            default = float(default)
        if flag['type'] == 'tuple':
            default = tuple(default)
        assert getattr(args, flag['dest']) == default, flag['name']


def test_every_original_flag_keeps_its_choices(shared):
    actions = {a.dest: a for a in option.build_parser()._actions}
    for flag in _flags(shared):
        if flag['choices'] is not None and flag['dest'] != 'precision':
            assert list(actions[flag['dest']].choices) == flag['choices'], flag['name']


def test_flag_types_follow_the_original():
    args = option.parse_args('--depth 56 --lr 0.05 --ratio 0.4516 --betas 0.8,0.99 --no_bias'.split())
    assert (args.depth, args.lr, args.ratio, args.betas, args.no_bias) == (56, 0.05, 0.4516, (0.8, 0.99), True)


def test_help_lists_the_flags_in_groups(capsys):
    with pytest.raises(SystemExit) as done:
        option.parse_args(['--help'])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for title in ('hardware:', 'data:', 'run directory and logging:', 'model:', 'training:', 'Hinge compression:'):
        assert title in text
    assert '--legacy_search' in text and '--p1_p2_same_ratio' in text
    assert '(default: 0.2)' in text and 'Hinge_WIDE_RESNET' in text and 'yawli' not in text


def test_argparse_errors_become_one_sentence_usage_errors():
    with pytest.raises(UsageError, match="argument --sparsity_regularizer: invalid choice: 'l3'.*see python"):
        option.parse_args(['--sparsity_regularizer', 'l3'])


def test_typed_data_sets_are_checked_before_the_template_and_must_agree_with_it():
    assert option.parse_args(['--template', 'CIFAR100']).data_train == 'CIFAR100'
    assert option.parse_args(['--data_train', 'CIFAR100', '--data_test', 'CIFAR100']).data_test == 'CIFAR100'
    with pytest.raises(UsageError, match='--data_train foo is not a known data set'):
        option.parse_args(['--template', 'CIFAR10', '--data_train', 'foo'])
    with pytest.raises(UsageError, match='--data_train CIFAR100 conflicts with --template CIFAR10'):
        option.parse_args(['--template', 'CIFAR10', '--data_train', 'CIFAR100'])


@pytest.mark.parametrize('flag,value', [('lr', 0.0), ('gamma', 1.5), ('momentum', 1.0), ('q', 0.0),
                                        ('remain_percentage', 1.01), ('stop_limit', float('nan'))])
def test_values_outside_their_ranges_are_refused(flag, value):
    args = option.parse_args([])
    setattr(args, flag, value)
    with pytest.raises(UsageError, match=f'--{flag} '):
        option.check(args)
    option.check(option.parse_args([]))                     # the defaults themselves are fine
