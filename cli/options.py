"""Command-line options shared by the berth subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.common.config import (
    DEFAULT_CNI_BIN_DIRS,
    DEFAULT_CNI_CONF_DIR,
    DEFAULT_DATA_ROOT,
    DEFAULT_EXEC_ROOT,
    SERVICES,
    Config,
    TLSFiles,
    load_engine_config,
)


def add_roots(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                        help="persistent state (default %(default)s)")
    parser.add_argument("--exec-root", default=DEFAULT_EXEC_ROOT,
                        help="sockets and runtime state (default %(default)s)")


def add_tls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", help="CA that signs peer certificates (tcp:// addresses)")
    parser.add_argument("--tls-cert", help="this process's certificate")
    parser.add_argument("--tls-key", help="this process's private key")
    parser.add_argument("--config", help="engine config file (JSON, daemon.json keys)")
    for service in SERVICES:
        parser.add_argument(f"--{service}-addr", default=None,
                            help=f"address of the {service} service (default unix socket)")


def add_cni(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cni-conf-dir",
                        help=f"network: pods' CNI network configs (default {DEFAULT_CNI_CONF_DIR})")
    parser.add_argument("--cni-bin-dir", action="append", metavar="DIR",
                        help="network: where CNI plugins are, repeatable "
                             f"(default {' and '.join(DEFAULT_CNI_BIN_DIRS)})")


def tls_files(ca: str | None, cert: str | None, key: str | None) -> TLSFiles | None:
    if not (ca or cert or key):
        return None
    if not (ca and cert and key):
        raise SystemExit("berth: TLS needs a CA, a certificate and a key together")
    return TLSFiles(ca, cert, key)


def config_from(args: argparse.Namespace) -> Config:
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
        engine=load_engine_config(getattr(args, "config", None)),
        gateway_tcp=getattr(args, "tcp", "") or "",
        gateway_tls=tls_files(getattr(args, "tlscacert", None), getattr(args, "tlscert", None),
                              getattr(args, "tlskey", None)),
        cni_conf_dir=Path(getattr(args, "cni_conf_dir", None) or DEFAULT_CNI_CONF_DIR).absolute(),
        cni_bin_dirs=tuple(Path(d).absolute() for d in getattr(args, "cni_bin_dir", None)
                           or DEFAULT_CNI_BIN_DIRS),
    )
