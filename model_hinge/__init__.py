"""Hinge: group-sparsity compression (filter pruning where a channel is free, decomposition where it is coupled)
of any CNN, inside the user's own training loop.

    hinge = model_hinge.Hinge(model, example_inputs, ratio=0.5)
    opt = torch.optim.SGD(hinge.param_groups(lr=0.1, lr_ratio=0.01), momentum=0.9)
    ... loss.backward(); hinge.step(opt) ...
    small = hinge.compress(); hinge.save('small.pt')
    small2 = model_hinge.load(fresh_model, 'small.pt')
"""

from model_hinge.api import Hinge, count, load
from model_hinge.autoplan import auto_plan
from model_hinge.config import HingeConfig
from model_hinge.errors import HingeError
from model_hinge.plan import Plan
from model_hinge.registry import ADAPTERS, NAMES, adapter_for, is_hinge

__all__ = ['ADAPTERS', 'NAMES', 'Hinge', 'HingeConfig', 'HingeError', 'Plan', 'adapter_for', 'auto_plan', 'count',
           'is_hinge', 'load']
