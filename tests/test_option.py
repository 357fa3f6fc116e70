"""option.py: every flag of the original, with its default, in readable groups."""

import json

import pytest

import option


def _flags(shared):
    return json.loads((shared / 'spec' / 'flags.json').read_text())['main_hinge']


def test_every_original_flag_parses_with_its_default(shared):
    args = option.parse_args([])
    for flag in _flags(shared):
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


def test_bad_choice_is_rejected_by_argparse():
    with pytest.raises(SystemExit) as done:
        option.parse_args(['--sparsity_regularizer', 'l3'])
    assert done.value.code == 2
