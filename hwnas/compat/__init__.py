"""Compatibility layers: code written for another NAS/pruning library runs on hwnas with its imports changed.

- :mod:`hwnas.compat.modelopt`: NVIDIA ModelOpt's ``modelopt.torch.nas``, ``modelopt.torch.opt`` and
  ``modelopt.torch.prune``.

A compatibility layer only translates signatures and return types onto hwnas's own API (``hwnas.convert``,
``hwnas.profile``, ``hwnas.search``, ``hwnas.prune``, ``hwnas.save`` / ``hwnas.restore``).
"""

__all__: list[str] = []
