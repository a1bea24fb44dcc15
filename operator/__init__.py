"""The control logic: planning, reconciliation, observation, coordination (docs/architecture.md).

This folder is imported as ``codehub.operator``. Because it is also named like the
standard library's ``operator``, running Python from the repository root (where the
current directory comes first on ``sys.path``) would otherwise shadow the standard
module. When loaded under the bare name ``operator`` it hands the import over to the
standard library module, so ``import operator`` means the same thing everywhere. Only
modules that never import ``operator`` themselves may be used for that hand-over.
"""

if __name__ == "operator":  # pragma: no cover - exercised in a subprocess test
    import os as _os
    import sys as _sys
    from importlib.machinery import ModuleSpec as _ModuleSpec
    from importlib.machinery import SourceFileLoader as _SourceFileLoader

    _path = _os.path.join(_os.path.dirname(_os.__file__), "operator.py")
    _loader = _SourceFileLoader("operator", _path)
    _std = type(_sys)("operator")
    _std.__spec__ = _ModuleSpec("operator", _loader, origin=_path)
    _std.__file__ = _path
    _std.__loader__ = _loader
    _sys.modules["operator"] = _std
    _loader.exec_module(_std)
    globals().update(_std.__dict__)
