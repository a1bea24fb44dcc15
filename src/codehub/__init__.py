"""codehub: a Kubernetes-style operator for developer workspaces on a plain Docker host."""
