"""Plots of the original's run directory: loss/error curves and compression ratios."""

import io
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.io import write_bytes_atomic  # noqa: E402


def _save(fig, path: Path, **kwargs) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:], **kwargs)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def loss_curves(run_dir: Path, log_train: torch.Tensor, log_test: torch.Tensor, test_only: bool) -> None:
    """{NLL,Top-1,Top-5}_{Test,Training}.pdf, as the original writes them."""
    splits = [('Test', log_test)]
    if not test_only and len(log_train):
        splits.append(('Training', log_train))
    for split, log in splits:
        start = 0 if split == 'Test' and len(log_train) < len(log_test) else 1
        axis = np.arange(start, start + len(log))
        for i, measure in enumerate(('NLL', 'Top-1', 'Top-5')):
            fig = plt.figure()
            plt.title(f'{measure} ({split})')
            plt.plot(axis, log[:, i].numpy(), label=f'Best: {float(log[:, i].min()):.4f}')
            plt.legend()
            plt.xlabel('Epochs')
            plt.ylabel('Loss' if measure == 'NLL' else 'Error (%)')
            plt.grid(True)
            _save(fig, run_dir / f'{measure}_{split}.pdf')


def compression_ratio(ratios: list[float], path: Path, target: float, reached: float | None = None) -> None:
    """The would-be FLOPs ratio after each search epoch, the target, and the ratio the compression reached."""
    fig = plt.figure()
    plt.title('Network Compression Ratio')
    epochs = np.arange(1, len(ratios) + 1)
    plt.plot(epochs, np.array(ratios), marker='.', label='would-be ratio (at --threshold)')
    plt.axhline(target, color='gray', linestyle='--', label=f'target {target:.4f}')
    if reached is not None:
        plt.plot([len(ratios)], [reached], marker='*', markersize=12, linestyle='', label=f'compressed {reached:.4f}')
    plt.legend()
    plt.xlabel('Epoch')
    plt.ylabel('Ratio')
    plt.grid(True)
    _save(fig, path, dpi=150)


def per_layer_ratio(ratios: list[list[float]], path: Path) -> None:
    """Fraction of removed channels per layer, one line per matrix role."""
    fig = plt.figure()
    plt.title('Per-Layer Compression Ratio')
    for i, values in enumerate(ratios):
        if values:
            plt.plot(np.arange(1, len(values) + 1), np.array(values), label=f'P{i + 1}')
    plt.legend()
    plt.xlabel('Layer Index')
    plt.ylabel('Ratio')
    plt.grid(True)
    _save(fig, path, dpi=150)


def channels_kept(layers: list[tuple[str, int, int]], path: Path) -> None:
    """Channels (or basis filters) before and after compression, one pair of bars per compressed layer."""
    positions = np.arange(len(layers))
    fig = plt.figure(figsize=(max(6.0, 0.12 * len(layers) + 2), 4))
    plt.bar(positions, [c for _, c, _ in layers], color='0.8', label='before')
    plt.bar(positions, [k for _, _, k in layers], color='tab:blue', label='kept')
    step = max(1, len(layers) // 24)
    plt.xticks(positions[::step], [label for label, _, _ in layers][::step], rotation=90, fontsize=7)
    plt.title('Channels kept per layer')
    plt.xlabel('Block.layer')
    plt.ylabel('Channels')
    plt.legend()
    plt.tight_layout()
    _save(fig, path, dpi=100)


def training_curves(history: list[dict], path: Path) -> None:
    """Loss and top-1 error (test and, where recorded, training) over every epoch of every stage of a run,
    with the stage boundaries marked."""
    x = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(axes, (('loss', 'Loss'), ('top1_err', 'Top-1 error (%)')), strict=True):
        ax.plot(x, [h[key] for h in history], label='test')
        train = [(i, h[f'train_{key}']) for i, h in zip(x, history, strict=True) if f'train_{key}' in h]
        if train:
            ax.plot([i for i, _ in train], [v for _, v in train], label='training')
        for i in range(1, len(history)):
            if history[i]['stage'] != history[i - 1]['stage']:
                ax.axvline(i + 0.5, color='0.5', linestyle='--')
                ax.text(i + 0.6, ax.get_ylim()[1], history[i]['stage'], va='top', fontsize=8)
        ax.set_xlabel(f'Epoch (all stages; first: {history[0]["stage"]})')
        ax.set_ylabel(label)
        ax.grid(True)
        ax.legend()
    fig.tight_layout()
    _save(fig, path, dpi=100)
