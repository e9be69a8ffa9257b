"""Configuration every berth process shares: roots, addresses, TLS, prefix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("image", "volume", "network", "container", "build", "cri", "gateway")
DEFAULT_DATA_ROOT = "/var/lib/berth"
DEFAULT_EXEC_ROOT = "/run/berth"
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
DEFAULT_CRI_STREAMING_ADDRESS = "127.0.0.1:0"


@dataclass(frozen=True)
class TLSFiles:
    ca: str
    cert: str
    key: str

    def read(self) -> tuple[bytes, bytes, bytes]:
        return (Path(self.ca).read_bytes(), Path(self.cert).read_bytes(),
                Path(self.key).read_bytes())


@dataclass
class Config:
    """What `berth serve` and `berth up` are told on the command line."""

    data_root: Path = Path(DEFAULT_DATA_ROOT)
    exec_root: Path = Path(DEFAULT_EXEC_ROOT)
    listen: str = ""                      # this service's gRPC address
    metrics_addr: str = "127.0.0.1:0"     # HOST:PORT; port 0 picks a free one
    tls: TLSFiles | None = None           # mutual TLS for tcp:// addresses
    peers: dict[str, str] = field(default_factory=dict)  # service -> address
    engine: dict = field(default_factory=dict)           # daemon.json-like settings
    engine_file: Path | None = None       # where `engine` comes from; read again on SIGHUP
    gateway_tcp: str = ""                 # HOST:PORT for the Docker API over TLS
    gateway_tls: TLSFiles | None = None   # CA (client certs), cert, key
    cni_conf_dir: Path = Path(DEFAULT_CNI_CONF_DIR)   # network: pod network configs
    cni_bin_dirs: tuple[Path, ...] = tuple(Path(d) for d in DEFAULT_CNI_BIN_DIRS)
    cri_streaming_address: str = DEFAULT_CRI_STREAMING_ADDRESS  # cri: HOST:PORT, 0 a free port
    cri_streaming_tls: tuple[str, str] | None = None  # cri: streaming server cert, key

    def service_dir(self, service: str) -> Path:
        path = self.data_root / service
        path.mkdir(parents=True, exist_ok=True)
        return path

    def address(self, service: str) -> str:
        """Where `service` listens: explicit peer address or its unix socket."""
        if service in self.peers:
            return self.peers[service]
        return f"unix://{self.exec_root / (service + '.sock')}"

    @property
    def instance_prefix(self) -> str:
        """Short name that keeps kernel objects of two engines apart.

        The default exec root gets "berth"; any other gets "b" plus a hash of
        the path, short enough for 15-character interface names.
        """
        if str(self.exec_root) == DEFAULT_EXEC_ROOT:
            return "berth"
        digest = hashlib.sha256(str(self.exec_root.resolve()).encode()).hexdigest()
        return "b" + digest[:6]

    @property
    def docker_socket(self) -> Path:
        return self.exec_root / "docker.sock"

