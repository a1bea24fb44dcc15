"""Fixtures for the operations e2e tests: the operator e2e ``stack`` (an API server on a
fresh database, scope labels, the run's bucket, coordinators on demand), reused as is.

The operator tests' conftest is loaded under another module name so its fixtures can be
re-exported here without copying them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_OPERATOR_E2E = Path(__file__).resolve().parents[1] / "operator"
if str(_OPERATOR_E2E) not in sys.path:
    sys.path.insert(0, str(_OPERATOR_E2E))

_spec = importlib.util.spec_from_file_location(
    "codehub_e2e_operator_conftest", _OPERATOR_E2E / "conftest.py"
)
assert _spec is not None
assert _spec.loader is not None
_operator_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_operator_conftest)

stack = _operator_conftest.stack
