"""The Kubernetes-compatible API server ("the shim", ARCHITECTURE A1) on aiohttp."""
