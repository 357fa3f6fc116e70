"""--target latency on the command line: the search's latency model, its report, and how exports fold pairs.

The layers are timed at --latency_batch on the run's device in the channels-last layout the trainer runs, and
the times are kept in the run directory (`latency.json`), so a resumed run measures nothing again. Under
torchrun only rank 0 measures and the others receive its times, so every process searches the same threshold.
The per-epoch ratio of the search and the ratio the threshold search aims at are the latency model's; results
keep the FLOPs ratio next to it. The threshold search then times the candidate compressed network itself (a few
measured passes, rank 0 under torchrun) and corrects its aim by the model's error there. --allocation fastest
(with --target flops) times the networks of a few rankings of the groups at the same FLOPs in the same way.
"""

import copy
from argparse import Namespace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from model_hinge.core import HingeModel
from model_hinge.latency import (
    CachedTimer,
    DeviceTimer,
    LatencyModel,
    allocation_ratios,
    candidate_ratio,
    fold_pairs,
    latency_report,
)
from model_hinge.plan import Insertion
from model_hinge.search import SearchController
from utils.distributed import World

LATENCY_FILE = 'latency.json'


def export_merge(args: Namespace) -> str:
    """What --export folds: --export_merge as given, else every pair that does not pay ('cheaper'), or only the
    plan's merges ('plan', the paper's behaviour) under --legacy_search."""
    return args.export_merge or ('plan' if args.legacy_search else 'cheaper')


def timer_of(args: Namespace, run_dir: Path, device: torch.device) -> CachedTimer:
    """The run's layer timer: --latency_batch on `device`, channels-last, cached in the run directory."""
    return CachedTimer(DeviceTimer(args.latency_batch, device, channels_last=True), run_dir / LATENCY_FILE)


def search_latency(args: Namespace, hm: HingeModel, run_dir: Path, device: torch.device,
                   world: World) -> LatencyModel | None:
    """The latency model of the search with --target latency (None otherwise); nothing is written here."""
    if args.target != 'latency':
        return None
    timer = timer_of(args, run_dir, device)
    merged_view = not (args.legacy_search and hm.policy.legacy.unmerged_search)
    if world.distributed:
        if world.main:
            LatencyModel(hm, timer, merged_view)
        shared = [timer.entries]
        dist.broadcast_object_list(shared, src=0)
        timer.entries.update(shared[0])
    return LatencyModel(hm, timer, merged_view)


def candidate_measure(args: Namespace, hm: HingeModel, latency: LatencyModel | None, world: World):
    """What the threshold search's measured passes call (target latency; None otherwise): the measured latency
    ratio of a candidate compression, folded as the export folds it. Under torchrun rank 0 times it and every
    process receives its number, so all choose the same threshold."""
    if latency is None:
        return None
    fold = export_merge(args) == 'cheaper'

    def measure(kept: dict) -> float:
        value = [candidate_ratio(hm, latency, kept, fold) if world.main else 0.0]
        if world.distributed:
            dist.broadcast_object_list(value, src=0)
        return value[0]

    return measure


def allocation_timing(args: Namespace, hm: HingeModel, device: torch.device, world: World):
    """What --allocation fastest times the rankings with (None with norm): their deployable networks, folded as the
    export folds them, at --latency_batch on the run's device, channels last, against the baseline. Under torchrun
    rank 0 times them and every process receives its numbers, so all keep the same groups."""
    if args.allocation != 'fastest':
        return None
    timer = DeviceTimer(args.latency_batch, device, channels_last=True)
    fold = export_merge(args) == 'cheaper'

    def time_allocations(allocations: list[dict]) -> list[float]:
        value = [allocation_ratios(hm, allocations, timer, fold) if world.main else []]
        if world.distributed:
            dist.broadcast_object_list(value, src=0)
        return value[0]

    return time_allocations


def save_times(latency: LatencyModel | None, world: World) -> None:
    """Keep the measured layer times in the run directory (rank 0, once the directory exists)."""
    if latency is not None and world.main:
        latency.timer.save()


def searched_ratios(history: list[dict], latency: LatencyModel | None) -> list[float]:
    """The ratio the search aimed at after each of its epochs, as recorded in results.json."""
    key = 'latency_ratio' if latency is not None else 'flops_ratio'
    return [h.get(key, h['flops_ratio']) for h in history if h['stage'] == 'search']


def epoch_ratio(controller: SearchController, threshold: float) -> tuple[float, dict]:
    """The search's ratio after an epoch (FLOPs, or predicted latency) and what results.json adds for it."""
    ratio = controller.target_ratio(controller.family_norms(), threshold)
    return ratio, ({'latency_ratio': ratio} if controller.latency is not None else {})


def compressed_latency(args: Namespace, latency: LatencyModel, hm: HingeModel, kept: dict,
                       baseline: nn.Module) -> tuple[dict, str]:
    """After compression: the model's prediction for the deployable network (its pairs folded as the export
    folds them) next to that network's measured time, paired with `baseline` (the network before compression);
    the results entries and a log line."""
    fold = export_merge(args) == 'cheaper'
    counts = torch.tensor([len(kept[fam]) for fam in hm.families])
    pairs = latency.folds_that_pay(counts) if fold else []
    deployable = copy.deepcopy(hm)
    fold_pairs(deployable, pairs)
    numbers = latency_report(latency, counts, fold, baseline, deployable.net, hm.input_dim)
    numbers['latency_folds'] = [p.conv for p in pairs]
    line = (f'Latency at batch {args.latency_batch}: predicted {numbers["latency_predicted_ms"]:.2f} ms, measured '
            f'{numbers["latency_measured_ms"]:.2f} ms, baseline {numbers["latency_baseline_ms"]:.2f} ms; ratio '
            f'predicted {numbers["latency_ratio_predicted"]:.4f}, measured {numbers["latency_ratio_measured"]:.4f} '
            f'(paired with the baseline; prediction error {numbers["latency_error"]:+.1%}); {len(pairs)} pairs fold '
            'faster.')
    return numbers, line


def fold_for_export(args: Namespace, hm: HingeModel, run_dir: Path, device: torch.device) -> list[Insertion]:
    """Fold the pairs the export folds (hm changes): the plan's merges and, with 'cheaper', every pair that does
    not pay, judged by measured times with --target latency and by FLOPs otherwise. Returns the latter."""
    mode = export_merge(args)
    if mode == 'cheaper' and args.target == 'latency':
        timer = timer_of(args, run_dir, device)
        model = LatencyModel(hm, timer, fractions=(1.0,), measure_baseline=False, families=[])
        timer.save()
        pairs = model.folds_that_pay(torch.zeros(0))
        fold_pairs(hm, pairs)
        return pairs
    if mode == 'cheaper':
        return hm.merge_where_cheaper()
    if not hm.merged:
        hm.merge()
    return []
