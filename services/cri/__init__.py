"""The Kubernetes CRI (runtime.v1) runtime and image services on berth."""
