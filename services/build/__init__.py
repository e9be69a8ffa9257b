"""The build service."""
