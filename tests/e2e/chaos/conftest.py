"""The chaos soak reuses the operator e2e stack (tests/e2e/operator): its helpers module
and its ``stack`` fixture."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_OPERATOR = Path(__file__).resolve().parent.parent / "operator"
if str(_OPERATOR) not in sys.path:
    sys.path.insert(0, str(_OPERATOR))

_spec = importlib.util.spec_from_file_location("operator_e2e_fixtures", _OPERATOR / "conftest.py")
assert _spec is not None
assert _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

stack = _fixtures.stack
