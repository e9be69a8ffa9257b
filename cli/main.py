"""Entry point of the `berth` command."""

from __future__ import annotations

import argparse
import os
import sys

from cli import options
from cli.ctl import build, container, image, network, volume
from cli.ctl.base import run_command
from services.common.config import SERVICES

CTL_MODULES = (image, container, network, volume, build)
# What dockerd sets too: the modes of what the engine creates (state, layers,
# directories) do not depend on the umask of whoever started it.
ENGINE_UMASK = 0o022


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="berth", description="Docker-compatible engine on gRPC")
    commands = top.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run every service and the gateway")
    options.add_roots(up)
    options.add_tls(up)
    options.add_cni(up)
    options.add_cri(up)
    up.add_argument("--metrics-port", type=int, default=0,
                    help="first metrics port (gateway; services follow); 0 picks free ports")
    up.add_argument("--tcp", help="also serve the Docker API on HOST:PORT with TLS")
    up.add_argument("--tlscacert", help="CA for client certificates (with --tcp)")
    up.add_argument("--tlscert", help="server certificate (with --tcp)")
    up.add_argument("--tlskey", help="server key (with --tcp)")

    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICES)
    options.add_roots(serve)
    options.add_tls(serve)
    options.add_cni(serve)
    options.add_cri(serve)
    serve.add_argument("--listen", help="unix://PATH or tcp://HOST:PORT (default E/<service>.sock)")
    serve.add_argument("--metrics-addr", help="HOST:PORT for Prometheus metrics")
    serve.add_argument("--supervisor-pid", type=int,
                       help="stop when this process, the parent, dies (set by berth up)")
    serve.add_argument("--tcp", help="gateway: also serve the Docker API on HOST:PORT with TLS")
    serve.add_argument("--tlscacert")
    serve.add_argument("--tlscert")
    serve.add_argument("--tlskey")

    status = commands.add_parser("status", help="health of every service")
    options.add_roots(status)
    options.add_tls(status)
    status.add_argument("--json", action="store_true")

    ctl = commands.add_parser("ctl", help="talk gRPC to one service")
    options.add_roots(ctl)
    options.add_tls(ctl)
    services = ctl.add_subparsers(dest="service", required=True)
    for module in CTL_MODULES:
        module.register(services)
    return top


def passthrough(args: argparse.Namespace) -> list[str]:
    """Flags `berth up` hands on to every child."""
    argv: list[str] = []
    for flag in ("tls_ca", "tls_cert", "tls_key", "config"):
        if getattr(args, flag):
            argv += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
    if args.cni_conf_dir:
        argv += ["--cni-conf-dir", args.cni_conf_dir]
    for directory in args.cni_bin_dir or []:
        argv += ["--cni-bin-dir", directory]
    for flag in ("cri_streaming_address", "cri_streaming_tls_cert", "cri_streaming_tls_key"):
        if getattr(args, flag):
            argv += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
    for service in SERVICES:
        if getattr(args, f"{service}_addr"):
            argv += [f"--{service}-addr", getattr(args, f"{service}_addr")]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = options.config_from(args)
    if args.command in ("serve", "up"):
        os.umask(ENGINE_UMASK)
    if args.command == "serve":
        from cli.serve import serve
        return serve(args.service, config, args.supervisor_pid)
    if args.command == "up":
        from cli.supervisor import up
        return up(config, args.metrics_port, passthrough(args))
    if args.command == "status":
        from cli.status import status
        return status(config, args.json)
    return run_command(lambda: args.command(args, config))


if __name__ == "__main__":
    sys.exit(main())
