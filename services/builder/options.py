"""What a build is asked to do: Docker's POST /build parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from berth.types.v1 import types_pb2


@dataclass
class BuildOptions:
    dockerfile: str = ""
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    cache_from: list[str] = field(default_factory=list)
    pull: bool = False
    remove: bool = True
    force_remove: bool = False
    quiet: bool = False
    network_mode: str = ""
    extra_hosts: list[str] = field(default_factory=list)
    shm_size: int = 0
    memory: int = 0
    memory_swap: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    platform: str = ""
    auth_configs: dict[str, types_pb2.RegistryAuth] = field(default_factory=dict)

    def auth_for(self, reference: str) -> types_pb2.RegistryAuth | None:
        """The credentials given for the registry `reference` lives on."""
        first, sep, _ = reference.partition("/")
        domain = first if sep and ("." in first or ":" in first or first == "localhost") \
            else "docker.io"
        names = [domain, f"https://{domain}", f"http://{domain}", f"https://{domain}/v1/"]
        if domain == "docker.io":
            names += ["https://index.docker.io/v1/", "index.docker.io"]
        return next((self.auth_configs[n] for n in names if n in self.auth_configs), None)

