"""Docker-shaped JSON <-> the typed protos of the services."""
