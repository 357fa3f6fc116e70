"""report.md of a run directory, and a comparison table of several runs.

The report is rebuilt from the run's own files (results.json, config.txt, compression_information.pt and the
plots the run wrote), so it can be regenerated at any time and says nothing the files do not: configuration,
FLOPs and parameters before and after, channels kept per layer, the would-be FLOPs ratio of the search,
loss and error curves, best errors, time per stage and images per second. `comparison_table` puts the
headline numbers of several runs side by side, as Markdown or CSV.
"""

import csv
import datetime
import io
import json
import statistics
from pathlib import Path
from typing import Any

from utils import plot
from utils.errors import UsageError
from utils.io import load_torch, save_text

REPORT = 'report.md'
CHANNELS_PLOT = 'report_channels.png'
CURVES_PLOT = 'report_curves.png'
STAGES = ('baseline', 'search', 'converging', 'test')
LOSS_PLOTS = ('NLL_Test.pdf', 'Top-1_Test.pdf', 'Top-5_Test.pdf', 'NLL_Training.pdf', 'Top-1_Training.pdf',
              'Top-5_Training.pdf')
SEARCH_PLOTS = ('compression_ratio.png', 'per_layer_compression_ratio.png')
COLUMNS = ('run', 'model', 'dataset', 'stage', 'epoch', 'flops', 'flops_compressed', 'flops_ratio', 'params',
           'params_compressed', 'params_ratio', 'threshold', 'baseline_top1_err', 'compressed_top1_err', 'top1_err',
           'top5_err', 'best_top1_err', 'search_epochs', 'training_seconds', 'images_per_second')


def read_results(run_dir: Path, what: str = 'the run directory') -> dict[str, Any]:
    """results.json of a run directory; its absence or a damaged file is a UsageError naming the folder."""
    path = Path(run_dir) / 'results.json'
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f'{what} {run_dir} is not a run directory (it has no results.json).') from None
    except (OSError, ValueError) as err:
        raise UsageError(f'{what}: {path} cannot be read ({err}).') from None
    if not isinstance(results, dict) or not isinstance(results.get('history'), list):
        raise UsageError(f'{what}: {path} is not a results file of this project (no history).')
    return results


def last_configuration(run_dir: Path) -> dict[str, str]:
    """The flags of the latest invocation recorded in config.txt (one 'name: value' block per invocation)."""
    path = run_dir / 'config.txt'
    if not path.is_file():
        return {}
    blocks = [b for b in path.read_text().split('\n\n') if b.strip()]
    flags = [b for b in blocks if ': ' in b]
    if not flags:
        return {}
    pairs = (line.split(': ', 1) for line in flags[-1].splitlines() if ': ' in line)
    return {name: value for name, value in pairs}


def stage_times(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage in order: epochs, training and evaluation seconds (sums over epochs) and the median images/s
    (training throughput; evaluation throughput for a test-only evaluation)."""
    rows = []
    for stage in STAGES:
        entries = [h for h in results['history'] if h['stage'] == stage]
        if not entries:
            continue
        rates = [h['images_per_second'] for h in entries if h.get('images_per_second')]
        rows.append({'stage': stage, 'epochs': len(entries) if stage != 'test' else None,
                     'training_seconds': sum(h['seconds'] for h in entries) if stage != 'test' else None,
                     'evaluation_seconds': sum(h['test_seconds'] for h in entries if 'test_seconds' in h)
                     if any('test_seconds' in h for h in entries) else None,
                     'images_per_second': statistics.median(rates) if rates else None})
    return rows


def kept_channels(info: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(label, channels before, channels kept) of every compressed layer, from compression_information.pt."""
    blocks = sorted((int(key[len('info_layer'):]), stats) for key, stats in info.items()
                    if key.startswith('info_layer'))
    layers = []
    for block, stats in blocks:
        for i, stat in enumerate(stats):
            channels, removed = int(stat['stat_channel'][0]), int(stat['stat_channel'][1])
            layers.append((f'{block}.{i}', channels, channels - removed))
    return layers


def _number(value: Any, scale: float = 1.0, unit: str = '', digits: int = 2) -> str:
    if value is None:
        return '–'
    if isinstance(value, (int, float)):
        return f'{value / scale:,.{digits}f}{unit}'
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + ['| ' + ' | '.join(r) + ' |' for r in rows]


def _configuration(run_dir: Path, defaults: dict[str, str] | None) -> list[str]:
    config = last_configuration(run_dir)
    if not config:
        return ['## Configuration', '', 'config.txt is missing.', '']
    changed = {k: v for k, v in config.items() if defaults is None or defaults.get(k) != v}
    title = 'Flags that differ from their defaults' if defaults is not None else 'Flags'
    lines = ['## Configuration', '', f'{title} (latest invocation in config.txt):', '']
    lines += _table(['flag', 'value'], [[f'`--{k}`', f'`{v}`'] for k, v in changed.items()])
    lines += ['', '<details><summary>All flags</summary>', '', '```']
    lines += [f'{k}: {v}' for k, v in config.items()] + ['```', '</details>', '']
    return lines


def _complexity(r: dict[str, Any]) -> list[str]:
    rows = [['FLOPs', _number(r['flops'], 1e6, ' M'), _number(r['flops_compressed'], 1e6, ' M'),
             _number(r['flops_ratio'], digits=4)],
            ['parameters', _number(r['params'], 1e3, ' k'), _number(r['params_compressed'], 1e3, ' k'),
             _number(r['params_ratio'], digits=4)]]
    lines = ['## FLOPs and parameters', '']
    lines += _table(['', 'before (baseline)', 'after', 'ratio'], rows)
    note = ('"After" is the compressed network (the would-be compressed one while the search runs), counted '
            'with its merging pairs folded where the model merges.')
    return lines + ['', note, '']


def _errors(r: dict[str, Any]) -> list[str]:
    rows = []
    if r.get('baseline_top1_err') is not None:
        rows.append(['converted baseline, before the search', _number(r['baseline_top1_err']), '–'])
    if r.get('compressed_top1_err') is not None:
        rows.append(['right after compression', _number(r['compressed_top1_err']), '–'])
    for stage in STAGES[:-1]:
        entries = [h for h in r['history'] if h['stage'] == stage]
        if entries:
            best = min(entries, key=lambda h: h['top1_err'])
            rows.append([f'best of the {stage} stage (epoch {best["epoch"]})', _number(best['top1_err']),
                         _number(best['top5_err'])])
    last = f'last ({r.get("stage")}, epoch {r.get("epoch")})'
    last = 'evaluation (--test_only)' if r.get('stage') == 'test' else last
    rows.append([last, _number(r.get('top1_err')), _number(r.get('top5_err'))])
    return ['## Errors (%)', ''] + _table(['', 'top-1', 'top-5'], rows) + ['']


def _times(r: dict[str, Any]) -> list[str]:
    rows = []
    for t in stage_times(r):
        rate = 'evaluation' if t['stage'] == 'test' else 'training'
        total = (t['training_seconds'] or 0.0) + (t['evaluation_seconds'] or 0.0)
        rows.append([t['stage'], _number(t['epochs'], digits=0), _number(t['training_seconds'], digits=1),
                     _number(t['evaluation_seconds'], digits=1), _number(total, digits=1),
                     f'{_number(t["images_per_second"], digits=1)} ({rate})'])
    if r.get('compression_seconds') is not None:
        rows.append(['compression (threshold search, surgery, evaluation)', '–', '–', '–',
                     _number(r['compression_seconds'], digits=1), '–'])
    lines = ['## Time per stage', '']
    lines += _table(['stage', 'epochs', 'training (s)', 'evaluation (s)', 'total (s)', 'images/s (median)'], rows)
    return lines + ['', 'Seconds are summed over the epochs of each stage; start-up and checkpoint writing are '
                        'not included.', '']


def _search(r: dict[str, Any], run_dir: Path) -> list[str]:
    searched = [h for h in r['history'] if h['stage'] == 'search']
    if not searched:
        return []
    ratios = ', '.join(f'{h["flops_ratio"]:.3f}' for h in searched)
    lines = ['## Search', '', f'Would-be FLOPs ratio after each search epoch: {ratios}.']
    if r.get('threshold') is not None:
        lines.append(f'Final nullifying threshold: {r["threshold"]:.6g}.')
    lines.append('')
    lines += [f'![{name}]({name})' for name in SEARCH_PLOTS if (run_dir / name).is_file()]
    return lines + ['']


def _channels(run_dir: Path) -> list[str]:
    path = run_dir / 'compression_information.pt'
    if not path.is_file():
        return []
    layers = kept_channels(load_torch(path, 'the report'))
    if not layers:
        return []
    plot.channels_kept(layers, run_dir / CHANNELS_PLOT)
    before, kept = sum(c for _, c, _ in layers), sum(k for _, _, k in layers)
    lines = ['## Channels kept per layer', '',
             f'{len(layers)} compressed layers (block.n: the n-th compressed layer of the block): {kept} of '
             f'{before} channels or basis filters kept.', '', f'![channels kept]({CHANNELS_PLOT})', '',
             '<details><summary>Per layer</summary>', '']
    lines += _table(['layer', 'before', 'kept'], [[label, str(c), str(k)] for label, c, k in layers])
    return lines + ['', '</details>', '']


def _curves(r: dict[str, Any], run_dir: Path) -> list[str]:
    trained = [h for h in r['history'] if h['stage'] != 'test']
    lines = ['## Loss and error curves', '']
    if trained:
        plot.training_curves(trained, run_dir / CURVES_PLOT)
        lines += [f'![loss and error]({CURVES_PLOT})', '']
    pdfs = [name for name in LOSS_PLOTS if (run_dir / name).is_file()]
    if pdfs:
        lines.append('Per-measure plots: ' + ', '.join(f'[{name}]({name})' for name in pdfs) + '.')
    elif not trained:
        return []
    return lines + ['']


def write_report(run_dir: Path, defaults: dict[str, str] | None = None) -> Path:
    """Write report.md (and its plots) into a run directory from the run's files; `defaults` (flag name ->
    default value as text) shortens the configuration to the flags that differ. Returns the report's path."""
    run_dir = Path(run_dir)
    r = read_results(run_dir)
    when = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
    lines = [f'# Run report: {run_dir.name}', '',
             f'{r.get("model")} on {r.get("dataset")}; last stage {r.get("stage")}, epoch {r.get("epoch")}. '
             f'Written {when} from the files of `{run_dir}`.', '']
    lines += _configuration(run_dir, defaults) + _complexity(r) + _errors(r) + _times(r)
    lines += _search(r, run_dir) + _channels(run_dir) + _curves(r, run_dir)
    path = run_dir / REPORT
    save_text('\n'.join(lines).rstrip('\n') + '\n', path)
    return path


def comparison_row(run_dir: Path) -> dict[str, Any]:
    """The headline numbers of one run, straight from its results.json (training seconds summed)."""
    r = read_results(run_dir, '--report')
    row = {key: r.get(key) for key in COLUMNS}
    row['run'] = str(run_dir)
    row['training_seconds'] = sum(h.get('seconds', 0.0) for h in r['history'])
    return row


def resolve_runs(runs: list[str], dir_save: str) -> list[Path]:
    """Run directories as given, or inside --dir_save; each must hold results.json (checked for all first)."""
    found = []
    for run in runs:
        candidates = [Path(run), Path(dir_save) / run]
        match = next((c for c in candidates if (c / 'results.json').is_file()), None)
        if match is None:
            raise UsageError(f'--report: {run} is not a run directory (no results.json there or in --dir_save '
                             f'{dir_save}); pass the folders of finished or running runs.')
        found.append(match)
    return found


MARKDOWN_FORMAT = {'flops': (1e6, ' M', 2), 'flops_compressed': (1e6, ' M', 2), 'params': (1e3, ' k', 2),
                   'params_compressed': (1e3, ' k', 2), 'flops_ratio': (1, '', 4), 'params_ratio': (1, '', 4),
                   'threshold': (1, '', 6), 'training_seconds': (1, '', 1), 'images_per_second': (1, '', 1)}


def comparison_table(runs: list[str], dir_save: str, as_csv: bool = False) -> str:
    """One row per run: model, stage, FLOPs and parameters with ratios, errors, training time, images/s."""
    rows = [comparison_row(path) for path in resolve_runs(runs, dir_save)]
    if as_csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    body = []
    for row in rows:
        cells = []
        for key in COLUMNS:
            scale, unit, digits = MARKDOWN_FORMAT.get(key, (1, '', 2))
            value = row[key]
            cells.append(str(value) if isinstance(value, int) and key not in MARKDOWN_FORMAT
                         else _number(value, scale, unit, digits))
        body.append(cells)
    return '\n'.join(_table(list(COLUMNS), body)) + '\n'
