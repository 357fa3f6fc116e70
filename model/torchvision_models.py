"""torchvision's classification networks as --base torchvision:NAME, built untrained for the data set's classes."""

import difflib
from argparse import Namespace

import torch.nn as nn

from model.common import num_classes
from utils.errors import UsageError

PREFIX = 'torchvision:'
# Networks whose auxiliary classifiers would make the training output a tuple instead of the logits (and whose
# builders warn unless the initialisation they default to is asked for).
OPTIONS = {name: {'aux_logits': False, 'init_weights': True} for name in ('googlenet', 'inception_v3')}


def is_torchvision(name: str) -> bool:
    """Whether a network name asks for a torchvision model (torchvision:NAME)."""
    return name.lower().startswith(PREFIX)


def model_name(name: str) -> str:
    """torchvision's name of the model in torchvision:NAME (lower case, as torchvision spells them)."""
    return name[len(PREFIX):].strip().lower()


def check(flag: str, name: str) -> None:
    """Refuse a torchvision:NAME that is no torchvision classification model, naming the closest ones."""
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    wanted = model_name(name)
    if wanted in known:
        return
    close = difflib.get_close_matches(wanted, known, n=3, cutoff=0.5)
    hint = f'close ones: {", ".join(PREFIX + c for c in close)}; ' if close else ''
    raise UsageError(f'{flag} {name}: torchvision has no classification model {wanted!r}; {hint}list them with '
                     'torchvision.models.list_models(module=torchvision.models).')


def build(args: Namespace, name: str) -> nn.Module:
    """torchvision.models.get_model(NAME) for the classes of --data_train, without pretrained weights."""
    import torchvision

    wanted = model_name(name)
    return torchvision.models.get_model(wanted, num_classes=num_classes(args.data_train), **OPTIONS.get(wanted, {}))
