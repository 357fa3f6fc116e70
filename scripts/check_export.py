"""Check an exported model folder with nothing but torch (and onnxruntime for model.onnx).

Runs every artefact listed in export.json on the input kept in reference_io.pt and compares its output with
the output the in-framework network gave at export time. Needs none of this project's code, so it can be
copied next to the artefacts and run on the deployment machine.

    python scripts/check_export.py EXPORT_DIR [--tolerance 1e-5]

Prints one line per artefact; exits 0 when every artefact that could be run is within the tolerance, 1
otherwise, 2 when the folder is not an export.
"""

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import torch


def run_artefact(fmt: str, path: Path, x: torch.Tensor) -> torch.Tensor | None:
    """The artefact's output for x; None for ONNX without onnxruntime."""
    if fmt == 'pt2':
        return torch.export.load(path).module()(x)
    if fmt == 'torchscript':
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message=r'.*torch\.jit.*deprecated', category=FutureWarning)
            return torch.jit.load(path, map_location='cpu')(x)
    if importlib.util.find_spec('onnxruntime') is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('folder', type=Path, help='the folder written by main_hinge.py --export')
    parser.add_argument('--tolerance', type=float, default=None, help="largest allowed |difference| "
                                                                      "(default: the export's own, 1e-5)")
    opts = parser.parse_args()
    try:
        meta = json.loads((opts.folder / 'export.json').read_text())
        reference = torch.load(opts.folder / meta['reference'], weights_only=True)
    except (OSError, ValueError, KeyError) as err:
        print(f'check_export.py: error: {opts.folder} is not an export folder ({err}).', file=sys.stderr)
        return 2
    tolerance = meta['tolerance'] if opts.tolerance is None else opts.tolerance
    failures = 0
    for fmt, artefact in meta['artefacts'].items():
        if artefact['file'] is None:
            print(f'{fmt}: not exported ({artefact["skipped"]})')
            continue
        with torch.no_grad():
            output = run_artefact(fmt, opts.folder / artefact['file'], reference['input'])
        if output is None:
            print(f'{fmt}: not run (onnxruntime is not installed)')
            continue
        difference = float((output - reference['output']).abs().max())
        failures += difference > tolerance
        print(f'{fmt}: max |difference| {difference:.3g} ({"ok" if difference <= tolerance else "FAILED"})')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
