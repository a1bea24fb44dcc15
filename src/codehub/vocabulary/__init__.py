"""Words every layer shares: error reasons and codes, timestamps and durations.

This package imports nothing else from codehub, so ``crd_like``, ``adapters`` and
``operator`` may all depend on it without creating an edge between each other
(see docs/adr/0001-package-layout.md and docs/architecture.md).
"""
