"""The Workspace resource and its Kubernetes-compatible API on PostgreSQL (ARCHITECTURE A1)."""
