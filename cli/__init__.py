"""The berth command: up, serve, status, ctl."""
