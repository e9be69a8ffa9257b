"""Registry credentials as Docker clients send them: the X-Registry-Auth
header (pull, push, distribution), X-Registry-Config (build) and the body
of /auth. Headers that do not decode count as no credentials, as in moby."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from berth.types.v1 import types_pb2


def _decoded_header(header: str) -> dict[str, Any]:
    """A base64url JSON object (padding optional), or {} when it is none."""
    if not header:
        return {}
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def auth_from_json(data: dict[str, Any]) -> types_pb2.RegistryAuth:
    """Docker's AuthConfig; keys match in any case, as Go's decoder does."""
    lowered = {key.lower(): value for key, value in data.items() if isinstance(value, str)}
    return types_pb2.RegistryAuth(
        username=lowered.get("username", ""), password=lowered.get("password", ""),
        server_address=lowered.get("serveraddress", ""),
        identity_token=lowered.get("identitytoken", ""),
        registry_token=lowered.get("registrytoken", ""), email=lowered.get("email", ""))


def registry_auth(header: str) -> types_pb2.RegistryAuth:
    """X-Registry-Auth: one registry's credentials."""
    return auth_from_json(_decoded_header(header))


def registry_config(header: str) -> dict[str, types_pb2.RegistryAuth]:
    """X-Registry-Config: registry -> credentials."""
    return {str(registry): auth_from_json(auth)
            for registry, auth in _decoded_header(header).items() if isinstance(auth, dict)}
