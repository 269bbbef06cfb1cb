"""Name -> builder registry behind :func:`hwnas.zoo.create`.

Kept in its own module so that model files can import :func:`register_model`
without importing the package ``__init__`` (which imports every model file).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["ModelBuilder", "create", "list_models", "register_model"]

ModelBuilder = Callable[..., nn.Module]

_MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a model builder under ``name``.

    The builder must accept ``num_classes`` as a keyword argument and return an
    ``nn.Module``.

    Args:
        name: Registry key, e.g. ``"resnet18"``.

    Returns:
        A decorator that records the builder and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered.

    Example:
        >>> from hwnas.zoo import register_model
        >>> @register_model("my_tiny_net")  # doctest: +SKIP
        ... def my_tiny_net(num_classes=1000):
        ...     return nn.Linear(3, num_classes)
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            owner = _MODELS[name]
            raise ValueError(
                f"zoo model name {name!r} is already registered by "
                f"{owner.__module__}.{owner.__qualname__}; expected a new name, got a duplicate. "
                "Pick a different name for the new builder."
            )
        _MODELS[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Return the registered model names, sorted alphabetically."""
    return sorted(_MODELS)


def create(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Build a registered model with freshly initialised weights.

    Args:
        name: A name from :func:`list_models`, e.g. ``"mobilenet_v3_small"``.
        num_classes: Size of the classifier output.
        **kwargs: Extra keyword arguments forwarded to the model's builder
            (e.g. ``dropout`` or ``image_size`` where the builder supports them).

    Returns:
        The model, in training mode, on the CPU (or the current default device).

    Raises:
        ValueError: If ``name`` is not registered.

    Example:
        >>> import torch
        >>> from hwnas import zoo
        >>> model = zoo.create("resnet18", num_classes=10).eval()
        >>> model(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """
    try:
        builder = _MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown zoo model {name!r}; expected one of: {', '.join(list_models())}. "
            "Use hwnas.zoo.list() to see the names, or register a new one with "
            "@hwnas.zoo.register_model."
        ) from None
    return builder(num_classes=num_classes, **kwargs)
