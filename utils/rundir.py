"""The run directory (--dir_save/--save or --load): where logs, checkpoints and results live."""

import datetime
import shutil
import sys
from argparse import Namespace
from pathlib import Path

from utils.errors import UsageError


def resolve_run_dir(args: Namespace) -> Path:
    """The directory of this run: --load when resuming (as given or under --dir_save), else --dir_save/--save."""
    if args.load:
        for candidate in (Path(args.dir_save) / args.load, Path(args.load)):
            if candidate.is_dir():
                return candidate
        raise UsageError(f'--load: no run directory {args.load} (looked in --dir_save {args.dir_save} and the '
                         'current directory); pass the directory of an earlier run or drop --load.')
    if not args.save or args.save in ('.', '..'):
        raise UsageError('--save must name a run directory inside --dir_save (for example --save my_run).')
    return Path(args.dir_save) / args.save


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
        (run_dir / 'model').mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now().strftime('%Y-%m-%d-%H:%M:%S')
        with open(run_dir / 'config.txt', 'a') as f:
            f.write(now + '\n\n')
            for name, value in vars(args).items():
                f.write(f'{name}: {value}\n')
            f.write('\n')
        self._file = open(run_dir / 'log.txt', 'a')

    def write(self, text: str) -> None:
        """Print a line and append it to log.txt (flushed, so a crash keeps everything logged so far)."""
        print(text, flush=True)
        self._file.write(text + '\n')
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ConsoleLog:
    """The same interface as RunLog for code paths that run before a run directory exists."""

    def write(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)

    def close(self) -> None:
        pass
