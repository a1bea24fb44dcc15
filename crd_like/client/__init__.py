"""Client side of the Kubernetes-compatible API: the async ApiClient, kubeconfig, manifests."""
