"""nftables rules of one engine: NAT out, published ports, isolation.

The engine owns one `ip`, one `ip6` and one `bridge` table named with its
instance prefix. Every change re-renders all three from the service's state and
loads them atomically with one `nft -f -` (delete + add in one transaction),
so the kernel never holds half a ruleset and two engines never touch each
other's rules. nftables rather than iptables: whole tables per engine, atomic
replacement, and no ordering fights in shared chains.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from services.common.errors import Internal

FAMILIES = ("ip", "ip6", "bridge")


@dataclass(frozen=True)
class BridgeRules:
    bridge: str
    subnet: str
    internal: bool
    icc: bool
    veths: tuple[str, ...] = ()   # host ends of the endpoints, for icc=false
    subnet6: str = ""
    masquerade: bool = True       # com.docker.network.bridge.enable_ip_masquerade


@dataclass(frozen=True)
class PortRule:
    proto: str            # tcp or udp
    host_ip: str          # "" or 0.0.0.0: every local address
    host_port: int
    container_ip: str
    container_port: int


def _quote(name: str) -> str:
    return json.dumps(name)


def _ip_table(table: str, bridges: list[BridgeRules], ports: list[PortRule]) -> str:
    lines = [f"table ip {table} {{",
             "  chain ports {"]
    for p in ports:
        match = "" if p.host_ip in ("", "0.0.0.0") else f"ip daddr {p.host_ip} "
        lines.append(f"    {match}{p.proto} dport {p.host_port} "
                     f"dnat to {p.container_ip}:{p.container_port}")
    lines += ["  }",
              "  chain prerouting {",
              "    type nat hook prerouting priority dstnat; policy accept;",
              "    fib daddr type local jump ports",
              "  }",
              "  chain output {",
              "    type nat hook output priority -100; policy accept;",
              "    fib daddr type local jump ports",
              "  }",
              "  chain postrouting {",
              "    type nat hook postrouting priority srcnat; policy accept;"]
    for b in bridges:
        if not b.subnet:
            continue
        lines.append(f"    oifname {_quote(b.bridge)} ip saddr 127.0.0.0/8 masquerade")
        # Hairpin: a container reaching a published port of its own network
        # must see the reply come back through the host, not straight.
        lines.append(f"    oifname {_quote(b.bridge)} ip saddr {b.subnet} ct status dnat "
                     f"masquerade")
        if b.masquerade and not b.internal:
            lines.append(f"    ip saddr {b.subnet} oifname != {_quote(b.bridge)} masquerade")
    lines += ["  }", *_forward_chain(bridges), "}"]
    return "\n".join(lines)


def _forward_chain(bridges: list[BridgeRules]) -> list[str]:
    """Isolation between networks and of internal ones (either IP family)."""
    names = [_quote(b.bridge) for b in bridges]
    lines = ["  chain forward {",
             "    type filter hook forward priority filter; policy accept;",
             # Published ports stay reachable from every network.
             "    ct status dnat accept"]
    for b in bridges:
        own = _quote(b.bridge)
        if b.internal:
            lines.append(f"    iifname {own} oifname != {own} drop")
            lines.append(f"    oifname {own} iifname != {own} drop")
        others = [n for n in names if n != own]
        if others:
            lines.append(f"    iifname {own} oifname {{ {', '.join(others)} }} drop")
    lines.append("  }")
    return lines


def _ip6_table(table: str, bridges: list[BridgeRules]) -> str:
    lines = [f"table ip6 {table} {{",
             "  chain postrouting {",
             "    type nat hook postrouting priority srcnat; policy accept;"]
    for b in bridges:
        if b.subnet6 and b.masquerade and not b.internal:
            lines.append(f"    ip6 saddr {b.subnet6} oifname != {_quote(b.bridge)} masquerade")
    lines += ["  }", *_forward_chain(bridges), "}"]
    return "\n".join(lines)


def _bridge_table(table: str, bridges: list[BridgeRules]) -> str:
    lines = [f"table bridge {table} {{",
             "  chain forward {",
             "    type filter hook forward priority filter; policy accept;"]
    for b in bridges:
        if not b.icc and b.veths:
            ports = ", ".join(_quote(v) for v in b.veths)
            lines.append(f"    iifname {{ {ports} }} oifname {{ {ports} }} drop")
    lines += ["  }", "}"]
    return "\n".join(lines)


def render(table: str, bridges: list[BridgeRules], ports: list[PortRule]) -> str:
    """The whole nft script: replace both tables of this engine."""
    return "\n".join([
        *_delete_tables(table), _ip_table(table, bridges, ports), _ip6_table(table, bridges),
        _bridge_table(table, bridges), ""])


def _delete_tables(table: str) -> list[str]:
    """Delete this engine's tables (declaring each first, so none may be missing)."""
    return [line for family in FAMILIES
            for line in (f"table {family} {table} {{}}", f"delete table {family} {table}")]


async def _nft(script: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "nft", "-f", "-", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate(script.encode())
    if process.returncode != 0:
        raise Internal(f"nft failed: {stderr.decode(errors='replace').strip()}")


class Firewall:
    def __init__(self, table: str) -> None:
        self.table = table
        self._lock = asyncio.Lock()
        self._loaded = ""   # the script the kernel holds; nft costs ~50 ms a run

    async def apply(self, bridges: list[BridgeRules], ports: list[PortRule]) -> None:
        script = render(self.table, bridges, ports)
        async with self._lock:
            if script == self._loaded:
                return
            await _nft(script)
            self._loaded = script

    async def remove(self) -> None:
        async with self._lock:
            self._loaded = ""
            await _nft("\n".join(_delete_tables(self.table)) + "\n")
