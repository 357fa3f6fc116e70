"""Several processes (torchrun, or --n_GPUs N), one per device, training with DistributedDataParallel.

Every process holds the same network and sees its slice of each (globally shuffled and augmented) batch;
gradients and BatchNorm statistics are averaged over the whole global batch, so the run computes what one
process with the same global batch would. Metrics are summed over processes; only rank 0 writes files.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def start(use_cuda: bool) -> World:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on the CPU); one process: SINGLE."""
    if not launched_by_torchrun():
        return SINGLE
    world = World(int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', 0)))
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if use_cuda else 'gloo')
    return world


def finish(world: World, together: bool = True) -> None:
    """Leave the process group; `together` (a run that ended well): once every process got here, since one that
    tore its group down while another still spoke to it could end the run with an abort instead of exit status 0.
    A failing process leaves at once (the others may wait in another collective; torchrun stops them)."""
    if world.distributed and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def sum_over_processes(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The elementwise sum over all processes (the tensor itself with one process)."""
    if world.distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def any_process(flag: bool, world: World) -> bool:
    """Whether any process raised `flag` (one collective; every process gets the same answer)."""
    if not world.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def my_share(batch: torch.Tensor, world: World) -> torch.Tensor:
    """This process's contiguous part of a global batch (sizes differ by at most one)."""
    return torch.tensor_split(batch, world.size)[world.rank] if world.distributed else batch


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every process's statistics depend on every
    process's inputs."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def differentiable_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return _SumOverProcesses.apply(tensor)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics cover the global batch of all processes (like torch's SyncBatchNorm,
    which only runs on GPUs; this runs on gloo and NCCL), with the parameters and buffers of BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = (0, 2, 3)
        local_count = torch.full((1,), float(x.numel() // x.shape[1]), device=x.device, dtype=x.dtype)
        sums = differentiable_all_reduce(torch.cat([x.sum(dims), local_count]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centred = x - mean.view(1, -1, 1, 1)
        var = differentiable_all_reduce((centred * centred).sum(dims)) / count
        with torch.no_grad():
            self.num_batches_tracked += 1
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            self.running_var.mul_(1 - factor).add_(var.detach() * count / (count - 1).clamp_min(1), alpha=factor)
        normed = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        return normed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1) if self.affine else normed


def global_batchnorm(net: nn.Module, world: World) -> None:
    """Make every BatchNorm of `net` use global-batch statistics when several processes train it. The
    modules stay BatchNorm2d (same keys, same counting and surgery), unlike torch's SyncBatchNorm."""
    if world.distributed:
        for module in net.modules():
            if type(module) is nn.BatchNorm2d:
                module.__class__ = GlobalBatchNorm2d


def wrapped(net: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The module the training step runs: DDP over `net` with several processes, `net` itself otherwise."""
    if not world.distributed:
        return net
    ids = [device.index] if device.type == 'cuda' else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


class CompiledOrEager(nn.Module):
    """torch.compile of a module, falling back to the module itself (once, with a log line) when compiling
    or running the compiled graph fails on this platform."""

    def __init__(self, module: nn.Module, log):
        super().__init__()
        self.eager, self.fast, self.log = module, torch.compile(module), log
        self.failed = False

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                return self.fast(*inputs)
            except Exception as err:  # any failure of the compiler means: run eagerly
                self.failed = True
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                self.log.write(f'--compile: torch.compile does not work here ({reason}); running without it.')
        return self.eager(*inputs)


def compiled(module: nn.Module, enabled: bool, log) -> nn.Module:
    """The module to run the training step with: compiled when --compile asks for it."""
    return CompiledOrEager(module, log) if enabled else module
