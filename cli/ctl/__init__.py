"""`berth ctl SERVICE VERB`: operators' gRPC clients, one module per service.

Each module defines `register(subparsers)`; its commands get the parsed
arguments and a Config, and talk to the service directly (no gateway).
"""
