"""Atomic writes (temp file + rename) and weights-only checkpoint loading."""

import io
import json
import os
import pickle
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
    """torch.save that never leaves a truncated file behind."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


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
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[-1] if str(err) else 'it needs arbitrary unpickling'
        raise UsageError(f'{what}: {path} cannot be loaded safely (weights_only): {reason}; '
                         'export its state_dict with torch.save(model.state_dict(), path).') from None
    except (RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f'{what}: {path} is not a readable PyTorch file ({first}).') from None
