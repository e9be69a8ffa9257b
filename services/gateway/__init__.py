"""The gateway: Docker Engine REST API in front of the berth services."""
