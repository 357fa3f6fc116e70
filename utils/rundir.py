"""The run directory (--dir_save/--save or --load): where logs, checkpoints and results live."""

import datetime
import os
import re
import shutil
import sys
from argparse import Namespace
from pathlib import Path

from utils.errors import UsageError

RUN_NAME_PART = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+=,@-]*')


def _check_name(flag: str, name: str) -> None:
    """A run name is one or more plain path components (letters, digits, ._+=,@-), never . or .."""
    parts = name.split('/')
    if not name or any(not RUN_NAME_PART.fullmatch(part) for part in parts):
        raise UsageError(f'{flag} {name!r} is not a run name: use letters, digits and ._+=,@- in one or more '
                         f'path components inside --dir_save (for example {flag} resnet20_run1).')


def _check_dir_save(dir_save: Path) -> None:
    """--dir_save must be a writable directory, or creatable in a writable one."""
    if dir_save.exists() and not dir_save.is_dir():
        raise UsageError(f'--dir_save {dir_save} is a file, not a directory; pass a directory for the runs.')
    existing = dir_save
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f'--dir_save {dir_save}: {existing} is not writable; pass a directory you can write to.')


def _check_not_a_file(dir_save: Path, name: str) -> None:
    """--save must name a directory to create or reuse: neither a file inside --dir_save nor a path through one."""
    path = dir_save
    for part in name.split('/'):
        path = path / part
        if path.exists() and not path.is_dir():
            where = 'is a file' if path == dir_save / name else f'leads through a file ({path.relative_to(dir_save)})'
            raise UsageError(f'--save {name!r} {where} inside --dir_save {dir_save}; a run needs a directory there: '
                             f'pass another run name (for example --save resnet20_run1).')


def _contained(run_dir: Path, dir_save: Path, flag: str, name: str) -> Path:
    """The run directory, refused when it resolves (through links) outside --dir_save."""
    root = dir_save.resolve()
    if run_dir.resolve() == root or not run_dir.resolve().is_relative_to(root):
        raise UsageError(f'{flag} {name} leads outside --dir_save {dir_save}; runs live inside --dir_save.')
    return run_dir


def resolve_run_dir(args: Namespace) -> Path:
    """The directory of this run, strictly inside --dir_save: --dir_save/--load when resuming (an absolute
    --load must lie inside --dir_save), else --dir_save/--save."""
    dir_save = Path(args.dir_save)
    _check_dir_save(dir_save)
    if args.load:
        load = Path(args.load)
        if not load.is_absolute():
            _check_name('--load', args.load)
        candidate = _contained(load if load.is_absolute() else dir_save / load, dir_save, '--load', args.load)
        if not (candidate / 'log.txt').is_file() and not (candidate / 'model').is_dir():
            raise UsageError(f'--load: {candidate} is not a run directory (no log.txt or model/); pass the name of '
                             'an earlier run inside --dir_save, or drop --load.')
        return candidate
    _check_name('--save', args.save)
    run_dir = _contained(dir_save / args.save, dir_save, '--save', args.save)
    _check_not_a_file(dir_save, args.save)
    return run_dir


def remove_run_dir(run_dir: Path, dir_save: str) -> None:
    """--reset: delete the run directory, refusing anything that is not strictly inside --dir_save."""
    run, root = run_dir.resolve(), Path(dir_save).resolve()
    if run == root or not run.is_relative_to(root):
        raise UsageError(f'--reset refuses to delete {run}: it is not a run directory inside --dir_save {root}.')
    if run.exists():
        shutil.rmtree(run)


class RunLog:
    """log.txt (append) and config.txt in the run directory; every line is also printed."""

    def __init__(self, run_dir: Path, args: Namespace):
        self.dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now().strftime('%Y-%m-%d-%H:%M:%S')
        with open(run_dir / 'config.txt', 'a') as f:
            f.write(now + '\n\n')
            for name, value in vars(args).items():
                f.write(f'{name}: {value}\n')
            f.write('\n')
        self._file = open(run_dir / 'log.txt', 'a')

    def write(self, text: str, console: bool = True) -> None:
        """Append a line to log.txt (flushed, so a crash keeps everything logged so far) and print it, unless
        it is only for the log (the model's structure)."""
        if console:
            print(text, flush=True)
        self._file.write(text + '\n')
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class SilentLog:
    """The log of the processes other than rank 0: they write nothing."""

    def write(self, text: str, console: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class ConsoleLog:
    """The same interface as RunLog for code paths that run before a run directory exists."""

    def write(self, text: str, console: bool = True) -> None:
        if console:
            print(text, file=sys.stdout, flush=True)

    def close(self) -> None:
        pass
