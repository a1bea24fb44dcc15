"""The Workspace resource and its Kubernetes-compatible API on PostgreSQL (docs/architecture.md)."""
