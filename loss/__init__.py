"""The --loss objective, top-1/top-5 error accounting on the device, and distillation."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.distributed import SINGLE, World, sum_over_processes
from utils.errors import UsageError


def _mse_one_hot(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(logits, F.one_hot(labels, logits.shape[1]).to(logits.dtype))


TERMS = {'CE': nn.CrossEntropyLoss, 'NLL': nn.NLLLoss}


class Loss(nn.Module):
    """A weighted sum such as '1*CE' or '1*CE+0.1*MSE' (MSE against one-hot labels)."""

    def __init__(self, spec: str):
        super().__init__()
        self.terms: list[tuple[float, str]] = []
        self.loss_module = nn.ModuleList()
        for part in spec.split('+'):
            weight, _, name = part.strip().partition('*')
            try:
                weight = float(weight)
            except ValueError:
                name = ''
            if name not in TERMS and name != 'MSE':
                raise UsageError(f"--loss {spec}: '{part}' is not of the form WEIGHT*NAME with NAME in CE, NLL, MSE.")
            self.terms.append((weight, name))
            if name in TERMS:
                self.loss_module.append(TERMS[name]())

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        modules = iter(self.loss_module)
        total = 0.0
        for weight, name in self.terms:
            term = _mse_one_hot(logits, labels) if name == 'MSE' else next(modules)(logits, labels)
            total = total + weight * term
        return total


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Knowledge distillation: KL(teacher || student) at temperature T, scaled by T^2, per sample."""
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p, q, reduction='sum') * temperature ** 2 / student.shape[0]


class ErrorMeter:
    """Running loss and top-1/top-5 errors, accumulated on the device (no host sync until `result`)."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float32, device=device)
        self.wrong = torch.zeros(2, dtype=torch.int64, device=device)
        self.count = 0

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(labels.unsqueeze(1))
        correct = torch.stack((hits[:, :1].sum(), hits.sum()))
        self.wrong += n - correct
        self.loss += loss.detach().float() * n
        self.count += n

    def result(self, world: World = SINGLE) -> tuple[float, float, float]:
        """(mean loss, top-1 error %, top-5 error %) over every process's samples, rounded through float32 as
        the original logs them."""
        totals = torch.cat([self.loss.double().view(1), self.wrong.double(),
                            torch.tensor([float(self.count)], dtype=torch.float64, device=self.wrong.device)])
        loss_sum, wrong1, wrong5, count = sum_over_processes(totals, world).tolist()
        n = np.float32(max(count, 1))
        wrong = np.array([wrong1, wrong5], dtype=np.float32)
        loss = np.float32(loss_sum) / n
        return float(loss), float(np.float32(100.0) * wrong[0] / n), float(np.float32(100.0) * wrong[1] / n)
