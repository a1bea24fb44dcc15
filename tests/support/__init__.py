"""Helpers shared by test modules (importable as ``support``; fixtures live in conftest)."""
