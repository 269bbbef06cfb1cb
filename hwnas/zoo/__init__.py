"""Hand-written reference models (no torchvision), built by name.

Plain ``torch.nn`` models of classic architectures, written from the papers, used as
models whose latency is predicted and as seeds for search spaces traced with
``torch.fx``. Parameter counts match the published torchvision/timm models exactly.
Every model traces with ``torch.fx.symbolic_trace`` and exports to ONNX (VGG only at
sizes where 7 divides its last feature map, e.g. 224); the CNNs accept any input of at
least 32x32, the ViTs only the ``image_size`` their position embedding was built for
(224 by default; ``create("vit_tiny", image_size=160)`` builds another).

Example:
    >>> import torch
    >>> from hwnas import zoo
    >>> "resnet18" in zoo.list()
    True
    >>> model = zoo.create("mobilenet_v3_small", num_classes=10).eval()
    >>> model(torch.zeros(1, 3, 160, 160)).shape
    torch.Size([1, 10])

The zoo's table is the kind ``"models"`` of :mod:`hwnas.registry` (``hwnas.registry.build("models", "resnet18",
num_classes=10)``); the zoo keeps the table itself because it imports nothing else of hwnas.
"""

# Importing the model modules registers their builders.
from hwnas.zoo import densenet, efficientnet, misc, mobilenet, regnet, resnet, shufflenet, vit  # noqa: F401
from hwnas.zoo._registry import create, list_models, register_model

__all__ = ["create", "list", "list_models", "register_model"]

#: ``hwnas.zoo.list()``: the registered names, sorted (an alias of :func:`list_models`).
list = list_models
