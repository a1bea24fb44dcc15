"""The Kubernetes-compatible API server ("the shim", docs/architecture.md) on aiohttp."""
