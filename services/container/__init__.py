"""The container service."""
