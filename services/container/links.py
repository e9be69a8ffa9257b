"""Legacy container links on the default bridge (`docker run --link
name:alias`), as moby's daemon/links: checked at create, stored as
`/name:/container/alias`, and at start turned into /etc/hosts entries and
environment variables from the linked containers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    target: str     # the linked container's name, without "/"
    alias: str

    @classmethod
    def parse(cls, spec: str) -> Link:
        """`name`, `name:alias` or the stored `/name:/container/alias`."""
        name, _, alias = spec.partition(":")
        name = name.lstrip("/")
        return cls(target=name, alias=alias.rsplit("/", 1)[-1] if alias else name)

    def stored(self, container_name: str) -> str:
        return f"/{self.target}:/{container_name}/{self.alias}"

    def hosts_entry(self, hostname: str, ip: str) -> str:
        """An extra-host entry (`names:ip`): alias, the linked container's
        hostname, and its name when the alias differs."""
        names = [self.alias, hostname] + ([self.target] if self.target != self.alias else [])
        return f"{' '.join(names)}:{ip}"

    def environment(self, container_name: str, ip: str, exposed_ports: list[str],
                    target_env: list[str]) -> list[str]:
        """ALIAS_NAME, ALIAS_PORT*, and ALIAS_ENV_* for the linked container's
        own variables (without HOME and PATH)."""
        prefix = self.alias.upper().replace("-", "_")
        env = []
        ports = sorted(exposed_ports, key=_port_order)
        if ports:
            number, protocol = _split(ports[0])
            env.append(f"{prefix}_PORT={protocol}://{ip}:{number}")
        for port in ports:
            number, protocol = _split(port)
            key = f"{prefix}_PORT_{number}_{protocol.upper()}"
            env += [f"{key}={protocol}://{ip}:{number}", f"{key}_ADDR={ip}",
                    f"{key}_PORT={number}", f"{key}_PROTO={protocol}"]
        env.append(f"{prefix}_NAME=/{container_name}/{self.alias}")
        for variable in target_env:
            key, sep, value = variable.partition("=")
            if sep and key not in ("HOME", "PATH"):
                env.append(f"{prefix}_ENV_{key}={value}")
        return env


def _split(port: str) -> tuple[str, str]:
    number, _, protocol = port.partition("/")
    return number, protocol or "tcp"


def _port_order(port: str) -> tuple[int, str]:
    number, protocol = _split(port)
    return (int(number) if number.isdigit() else 0, protocol)
