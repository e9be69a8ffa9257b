"""gRPC channels from one berth process to another."""

from __future__ import annotations

import grpc

from services.common.config import Config

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _target(config: Config, service: str) -> tuple[str, grpc.ChannelCredentials | None]:
    """The dial target and, for tcp:// peers, the mutual-TLS credentials."""
    address = config.address(service)
    if not address.startswith("tcp://"):
        return address, None
    if config.tls is None:
        raise SystemExit(f"berth: {service} at {address} needs --tls-ca/--tls-cert/--tls-key")
    ca, cert, key = config.tls.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                         certificate_chain=cert)
    return address.removeprefix("tcp://"), creds


def channel(config: Config, service: str) -> grpc.aio.Channel:
    """An asyncio channel to `service` (unix socket, or tcp:// with mutual TLS)."""
    target, creds = _target(config, service)
    if creds is None:
        return grpc.aio.insecure_channel(target, options=_OPTIONS)
    return grpc.aio.secure_channel(target, creds, options=_OPTIONS)


def sync_channel(config: Config, service: str) -> grpc.Channel:
    """A blocking channel, for the CLI."""
    target, creds = _target(config, service)
    if creds is None:
        return grpc.insecure_channel(target, options=_OPTIONS)
    return grpc.secure_channel(target, creds, options=_OPTIONS)
