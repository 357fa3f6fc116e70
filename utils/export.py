"""A network as standalone artefacts that load without this project's code.

`export_network` writes, into one folder, the network as a torch.export program (`model.pt2`, loaded with
torch.export.load), as TorchScript (`model.torchscript.pt`, torch.jit.load) and, when the optional `onnx` and
`onnxscript` packages are installed, as ONNX (`model.onnx`, any ONNX runtime). The batch dimension is dynamic
(any batch size from 1); the other input dimensions are fixed. Every artefact is loaded back and run on a
seeded random batch, and its largest absolute output difference to the eager network is recorded in
`export.json` next to the caller's metadata (model, FLOPs, parameters, ...). `reference_io.pt` keeps that
input and the eager output, so that `scripts/check_export.py` can verify the artefacts on another machine
with nothing but torch (and onnxruntime for the ONNX file).
"""

import contextlib
import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from utils.errors import UsageError
from utils.io import save_json, save_torch, write_bytes_atomic

FILES = {'pt2': 'model.pt2', 'torchscript': 'model.torchscript.pt', 'onnx': 'model.onnx'}
METADATA, REFERENCE = 'export.json', 'reference_io.pt'
TOLERANCE = 1e-5
MAX_BATCH = 65536
REFERENCE_BATCH = 2


def onnx_missing() -> str | None:
    """Why ONNX cannot be written here (the missing optional packages), or None when it can."""
    missing = [name for name in ('onnx', 'onnxscript') if importlib.util.find_spec(name) is None]
    return f'{" and ".join(missing)} not installed' if missing else None


def check_target(path: str) -> Path:
    """The export folder, refused (before anything is written) when it names an existing file."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f'--export {path} is a file; pass a folder for the exported model.')
    return folder


@contextlib.contextmanager
def _quiet_jit():
    """TorchScript is deprecated in favour of torch.export but still the most widely loadable format; its
    deprecation warnings would only repeat that on every export."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=r'.*torch\.jit.*deprecated', category=FutureWarning)
        warnings.filterwarnings('ignore', message=r'.*torch\.jit.*deprecated', category=DeprecationWarning)
        yield


def to_program(net: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """The network as a torch.export program with a dynamic batch dimension (non-strict tracing, which
    accepts the plain Python of the model code)."""
    batch = torch.export.Dim('batch', min=1, max=MAX_BATCH)
    return torch.export.export(net, (example,), dynamic_shapes=({0: batch},), strict=False)


def _bytes(save, obj) -> bytes:
    buffer = io.BytesIO()
    save(obj, buffer)
    return buffer.getvalue()


def write_pt2(program: torch.export.ExportedProgram, path: Path) -> None:
    """The program as a .pt2 archive (torch.export.save), written atomically."""
    write_bytes_atomic(path, _bytes(torch.export.save, program))


def write_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    """TorchScript by tracing (the model code has no data-dependent control flow). The trace's own re-run check
    is off: export_network compares the saved artefact's outputs anyway."""
    with _quiet_jit():
        traced = torch.jit.trace(net, example, check_trace=False)
        write_bytes_atomic(path, _bytes(torch.jit.save, traced))


def write_onnx(program: torch.export.ExportedProgram, path: Path) -> None:
    """ONNX through torch's exporter (which needs onnxscript), from the program already exported."""
    onnx_program = torch.onnx.export(program, dynamo=True, verbose=False)
    write_bytes_atomic(path, onnx_program.model_proto.SerializeToString())


def load_runner(fmt: str, path: Path, device: torch.device | str = 'cpu'):
    """A callable tensor -> tensor running an artefact the way a user without this project would."""
    if fmt == 'pt2':
        return torch.export.load(path).module().to(device)
    if fmt == 'torchscript':
        with _quiet_jit():
            return torch.jit.load(path, map_location=device)
    if fmt == 'onnx':
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.cpu().numpy()})[0])
    raise ValueError(f'unknown export format {fmt!r}')


def _max_difference(fmt: str, path: Path, example: torch.Tensor, expected: torch.Tensor) -> float | None:
    """Largest |artefact output - eager output| on the reference batch and on its first image alone (the
    dynamic batch); None for ONNX when onnxruntime is not installed."""
    if fmt == 'onnx' and importlib.util.find_spec('onnxruntime') is None:
        return None
    runner = load_runner(fmt, path)
    with torch.no_grad():
        return max(float((runner(x) - y).abs().max()) for x, y in ((example, expected), (example[:1], expected[:1])))


@torch.no_grad()
def _make_contiguous(net: nn.Module) -> None:
    """Give every parameter and buffer its own contiguous storage: checkpoints can hold strided tensors (the
    original's compressed ones do), which the .pt2 writer cannot store as plain weights, and channels-last
    weights of a GPU run are strided too."""
    for t in [*net.parameters(), *net.buffers()]:
        if not t.is_contiguous():
            t.data = t.data.contiguous()


def export_network(net: nn.Module, input_dim: tuple, folder: Path, metadata: dict[str, Any],
                   formats: tuple[str, ...] = tuple(FILES)) -> dict[str, Any]:
    """Write `net` (float32, on the CPU, in eval mode) in every format of `formats` (ONNX only where its
    packages are installed), check each artefact against the eager network, and write export.json (the
    metadata plus what was written and measured) and reference_io.pt. Returns the export.json content.

    `net` itself is moved to the CPU, contiguous float32 and eval mode: pass a copy to keep it as it was.
    """
    net = net.cpu().float().eval()
    _make_contiguous(net)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(REFERENCE_BATCH, *input_dim, generator=generator)
    with torch.no_grad():
        expected = net(example)
    folder.mkdir(parents=True, exist_ok=True)
    program = to_program(net, example)
    artefacts: dict[str, dict[str, Any]] = {}
    for fmt in formats:
        path = folder / FILES[fmt]
        if fmt == 'onnx' and onnx_missing():
            artefacts[fmt] = {'file': None, 'skipped': onnx_missing()}
            continue
        if fmt == 'pt2':
            write_pt2(program, path)
        elif fmt == 'torchscript':
            write_torchscript(net, example, path)
        else:
            write_onnx(program, path)
        difference = _max_difference(fmt, path, example, expected)
        artefacts[fmt] = {'file': FILES[fmt], 'max_abs_diff': difference,
                          'within_tolerance': None if difference is None else difference <= TOLERANCE}
    save_torch({'input': example, 'output': expected}, folder / REFERENCE)
    content = dict(metadata, input_shape=['batch', *input_dim], batch_sizes=[1, MAX_BATCH], dtype='float32',
                   torch=torch.__version__, tolerance=TOLERANCE, reference=REFERENCE, artefacts=artefacts)
    save_json(content, folder / METADATA)
    return content


def describe(content: dict[str, Any]) -> list[str]:
    """One log line per format: file and measured difference, or why it was not written or not checked."""
    lines = []
    for fmt, a in content['artefacts'].items():
        if a['file'] is None:
            lines.append(f'  {fmt}: not written ({a["skipped"]})')
        elif a['max_abs_diff'] is None:
            lines.append(f'  {fmt}: {a["file"]} (not run: onnxruntime is not installed)')
        else:
            verdict = 'ok' if a['within_tolerance'] else f'WARNING: above the tolerance {TOLERANCE:g}'
            lines.append(f'  {fmt}: {a["file"]}, max |output difference| {a["max_abs_diff"]:.3g} ({verdict})')
    return lines
