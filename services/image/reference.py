"""Image references normalised as Docker does (docker-image-py mirrors
distribution/reference): `busybox` is `docker.io/library/busybox:latest` and
shows as `busybox:latest`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from docker_image.reference import InvalidReference, Reference

from services.common.errors import InvalidArgument

DEFAULT_TAG = "latest"
DOCKER_HUB = "docker.io"
_OFFICIAL = "library/"
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")  # fullmatch
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_ID_PREFIX = re.compile(r"^(sha256:)?[a-f0-9]{1,64}$")
# distribution/reference's domain: host names or a bracketed IPv6 address,
# and an optional port.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
                     r"(?::([0-9]{1,5}))?")


def is_registry_domain(domain: str) -> bool:
    """A registry host[:port] as references name them: no path, no port
    beyond 65535; what a login's server address must come down to."""
    match = _DOMAIN.fullmatch(domain)
    return match is not None and int(match.group(1) or 0) < 65536


@dataclass(frozen=True)
class ImageRef:
    """A normalised reference: `name` is canonical (`docker.io/library/x`)."""

    name: str
    tag: str = ""
    digest: str = ""

    @property
    def domain(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def path(self) -> str:
        return self.name.split("/", 1)[1]

    @property
    def familiar_name(self) -> str:
        """`busybox`, `user/app`, `localhost:5000/app`: how Docker shows names."""
        if self.domain != DOCKER_HUB:
            return self.name
        return self.path.removeprefix(_OFFICIAL)

    def __str__(self) -> str:
        """The canonical string stored as a reference key."""
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}"

    @property
    def familiar(self) -> str:
        if self.digest:
            return f"{self.familiar_name}@{self.digest}"
        return f"{self.familiar_name}:{self.tag}"

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.name, tag=tag)

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.name, digest=digest)


def parse(text: str, default_tag: bool = True) -> ImageRef:
    """Parse a user-given reference; `default_tag` adds `:latest` to a bare name."""
    rest, _, digest = text.partition("@")
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidArgument("invalid reference format")
    if digest and not DIGEST.fullmatch(digest):
        raise InvalidArgument("invalid reference format")
    try:
        parsed = Reference.parse_normalized_named(name)
    except InvalidReference as exc:
        message = str(exc)
        if not message.startswith("invalid reference format"):
            message = f"invalid reference format: {message}"
        raise InvalidArgument(message) from exc
    if parsed["tag"] or parsed["digest"]:
        raise InvalidArgument("invalid reference format")
    if not tag and not digest and default_tag:
        tag = DEFAULT_TAG
    return ImageRef(parsed["name"], tag=tag, digest=digest)


def parse_repository(repo: str, tag: str) -> ImageRef:
    """`repo` + `tag` query arguments as Docker's tag and pull endpoints take them."""
    if tag and not _TAG.match(tag):
        raise InvalidArgument("invalid tag format")
    ref = parse(repo, default_tag=not tag)
    if tag:
        if ref.digest or ref.tag:
            raise InvalidArgument("invalid reference format")
        ref = ref.with_tag(tag)
    return ref


def looks_like_id(text: str) -> bool:
    """An image ID or ID prefix (hex, optionally `sha256:`)."""
    return bool(_ID_PREFIX.match(text))
