"""Standard backbones from torchvision, turned into feature extractors (never downloads weights)."""
from __future__ import annotations

import torchvision
from torch import nn


def cifar_resnet18(conv1_padding: int = 2) -> nn.Module:
    """solo-learn's CIFAR ResNet-18 backbone: torchvision resnet18 (weights=None) with a 3x3 stride-1 conv1,
    no max-pool and no classifier.

    conv1_padding: 2 as in solo-learn (``solo/methods/base.py``: ``nn.Conv2d(3, 64, kernel_size=3, stride=1,
        padding=2, bias=False)``), so that its checkpoints give the features they were trained to give;
        1 is the common "same" variant. The padding has no parameters: both load the same checkpoints.
    Input: B x 3 x H x W (32 x 32 for CIFAR). Output: B x 512.
    """
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=conv1_padding, bias=False)
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def torchvision_encoder(name: str, **kwargs: object) -> nn.Module:
    """Any torchvision classification model (weights=None) with its last Linear layer replaced by Identity,
    so it outputs the features that fed the classifier (B x feature_dim; e.g. 512 for resnet18, 768 for
    vit_b_16). Models without a Linear classifier (squeezenet) lose their last 1x1 Conv2d instead.

    kwargs go to ``torchvision.models.get_model``. Raises ValueError for an unknown model name.
    """
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(f"unknown torchvision classification model {name!r}; available: {', '.join(available)}")
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    heads = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not heads:
        heads = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    parent_name, _, child = heads[-1].rpartition(".")
    setattr(model.get_submodule(parent_name), child, nn.Identity())
    return model
