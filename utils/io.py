"""Atomic writes (temp file + rename), commits of several files at once, and weights-only checkpoint loading."""

import copy
import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from utils.errors import UsageError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write bytes to a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, 'wb') as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_torch(obj: Any, path: Path) -> None:
    """torch.save of `obj` with contiguous tensors that never leaves a truncated file behind."""
    buffer = io.BytesIO()
    torch.save(contiguous(obj), buffer)
    write_bytes_atomic(path, buffer.getvalue())


def contiguous(obj: Any) -> Any:
    """`obj` with its tensors (in dicts, lists, tuples) in row-major layout: torch.save keeps channels-last
    strides, and `.view(-1)` fails on a loaded weight that has them. Mappings keep their type and metadata."""
    if isinstance(obj, torch.Tensor):
        return obj.contiguous()
    if isinstance(obj, dict):
        copied = copy.copy(obj)
        for key, value in obj.items():
            copied[key] = contiguous(value)
        return copied
    if isinstance(obj, list | tuple) and not hasattr(obj, '_fields'):
        return type(obj)(contiguous(v) for v in obj)
    return obj


def save_text(text: str, path: Path) -> None:
    """Replace a text file atomically."""
    write_bytes_atomic(path, text.encode('utf-8'))


def save_json(obj: Any, path: Path) -> None:
    """Replace a JSON file atomically (pretty-printed, stable key order)."""
    save_text(json.dumps(obj, indent=1) + '\n', path)


def load_torch(path: Path, what: str) -> Any:
    """Load a checkpoint with weights_only=True on the CPU; any failure becomes a one-line UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f'{what}: file {path} does not exist; check the path.')
    with open(path, 'rb') as f:
        head = f.read(4)
    if not (head.startswith(b'PK') or head.startswith(b'\x80')):
        raise UsageError(f'{what}: {path} is not a PyTorch file (torch.save writes a zip archive or a pickle).')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[-1] if str(err) else 'it needs arbitrary unpickling'
        raise UsageError(f'{what}: {path} cannot be loaded safely (weights_only): {reason}; '
                         'export its state_dict with torch.save(model.state_dict(), path).') from None
    except (RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f'{what}: {path} is not a readable PyTorch file ({first}).') from None


PENDING = '.pending'
COMPLETE = '.complete'


class Commit:
    """The files of one step of a run (an epoch's checkpoint and logs, the compression), written into
    run/.pending and moved into place together: a kill at any moment leaves either all of them or none
    (recover() finishes a commit that was complete, or drops one that was not)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.pending = self.run_dir / PENDING
        if self.pending.exists():
            shutil.rmtree(self.pending)

    def path(self, name: str) -> Path:
        """Where to write run_dir/name for this commit."""
        return self.pending / name

    def done(self) -> None:
        """Mark the commit complete, then move every file into place."""
        write_bytes_atomic(self.pending / COMPLETE, b'')
        _move_pending(self.run_dir)


def _move_pending(run_dir: Path) -> None:
    pending = run_dir / PENDING
    for source in sorted(p for p in pending.rglob('*') if p.is_file() and p.name != COMPLETE):
        target = run_dir / source.relative_to(pending)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    shutil.rmtree(pending)


def recover(run_dir: Path) -> None:
    """After a kill: finish a complete commit or drop an incomplete one, and delete half-written temp files."""
    run_dir = Path(run_dir)
    pending = run_dir / PENDING
    if (pending / COMPLETE).is_file():
        _move_pending(run_dir)
    elif pending.exists():
        shutil.rmtree(pending)
    if run_dir.is_dir():
        for stray in run_dir.rglob('.*.tmp'):
            stray.unlink()
