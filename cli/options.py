"""Command-line options shared by the berth subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.common.config import (
    DEFAULT_CNI_BIN_DIRS,
    DEFAULT_CNI_CONF_DIR,
    DEFAULT_CRI_STREAMING_ADDRESS,
    DEFAULT_DATA_ROOT,
    DEFAULT_EXEC_ROOT,
    SERVICES,
    Config,
    TLSFiles,
)
from services.common.engine_config import read_engine_config
from services.common.errors import InvalidArgument


def add_roots(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                        help="persistent state (default %(default)s)")
    parser.add_argument("--exec-root", default=DEFAULT_EXEC_ROOT,
                        help="sockets and runtime state (default %(default)s)")


def add_tls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", help="CA that signs peer certificates (tcp:// addresses)")
    parser.add_argument("--tls-cert", help="this process's certificate")
    parser.add_argument("--tls-key", help="this process's private key")
    parser.add_argument("--config",
                        help="engine config file (JSON, daemon.json keys; read again on SIGHUP)")
    for service in SERVICES:
        parser.add_argument(f"--{service}-addr", default=None,
                            help=f"address of the {service} service (default unix socket)")
    parser.add_argument("--cri-listen", dest="cri_addr",
                        help="where the cri service serves kubelet (default unix://E/cri.sock)")


def add_cni(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cni-conf-dir",
                        help=f"network: pods' CNI network configs (default {DEFAULT_CNI_CONF_DIR})")
    parser.add_argument("--cni-bin-dir", action="append", metavar="DIR",
                        help="network: where CNI plugins are, repeatable "
                             f"(default {' and '.join(DEFAULT_CNI_BIN_DIRS)})")


def add_cri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cri-streaming-address", default=DEFAULT_CRI_STREAMING_ADDRESS,
                        help="cri: HOST:PORT of the exec/attach/port-forward server "
                             "(default %(default)s: loopback, a free port)")
    parser.add_argument("--cri-streaming-tls-cert", help="cri: serve streaming over TLS")
    parser.add_argument("--cri-streaming-tls-key")


def streaming_tls(cert: str | None, key: str | None) -> tuple[str, str] | None:
    if not (cert or key):
        return None
    if not (cert and key):
        raise SystemExit("berth: the cri streaming server's TLS needs a certificate and a key")
    return str(Path(cert).absolute()), str(Path(key).absolute())


def tls_files(ca: str | None, cert: str | None, key: str | None) -> TLSFiles | None:
    if not (ca or cert or key):
        return None
    if not (ca and cert and key):
        raise SystemExit("berth: TLS needs a CA, a certificate and a key together")
    return TLSFiles(ca, cert, key)


def engine_config(path: Path | None) -> dict:
    try:
        return read_engine_config(path)
    except InvalidArgument as exc:
        raise SystemExit(f"berth: {exc.message}") from None


def config_from(args: argparse.Namespace) -> Config:
    engine_file = Path(args.config).absolute() if getattr(args, "config", None) else None
    peers = {service: getattr(args, f"{service}_addr") for service in SERVICES
             if getattr(args, f"{service}_addr", None)}
    return Config(
        data_root=Path(args.data_root).absolute(),
        exec_root=Path(args.exec_root).absolute(),
        listen=getattr(args, "listen", "") or "",
        metrics_addr=getattr(args, "metrics_addr", None) or "127.0.0.1:0",
        tls=tls_files(getattr(args, "tls_ca", None), getattr(args, "tls_cert", None),
                      getattr(args, "tls_key", None)),
        peers=peers,
        engine=engine_config(engine_file),
        engine_file=engine_file,
        gateway_tcp=getattr(args, "tcp", "") or "",
        gateway_tls=tls_files(getattr(args, "tlscacert", None), getattr(args, "tlscert", None),
                              getattr(args, "tlskey", None)),
        cni_conf_dir=Path(getattr(args, "cni_conf_dir", None) or DEFAULT_CNI_CONF_DIR).absolute(),
        cni_bin_dirs=tuple(Path(d).absolute() for d in getattr(args, "cni_bin_dir", None)
                           or DEFAULT_CNI_BIN_DIRS),
        cri_streaming_address=getattr(args, "cri_streaming_address", None)
        or DEFAULT_CRI_STREAMING_ADDRESS,
        cri_streaming_tls=streaming_tls(getattr(args, "cri_streaming_tls_cert", None),
                                        getattr(args, "cri_streaming_tls_key", None)),
    )
