"""NVIDIA ModelOpt's NAS and pruning API over hwnas: change the imports, keep the code.

::

    import hwnas.compat.modelopt.nas as mtn     # was: import modelopt.torch.nas as mtn
    import hwnas.compat.modelopt.opt as mto     # was: import modelopt.torch.opt as mto
    import hwnas.compat.modelopt.prune as mtp   # was: import modelopt.torch.prune as mtp

See ``docs/modelopt.md`` for what maps to what and where the two differ.
"""

__all__ = ["nas", "opt", "prune"]
