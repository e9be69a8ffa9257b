"""Docker's edits of a container's /etc/hosts on a live connect or disconnect
(moby's etchosts.Add and Delete): its own records are appended or dropped and
every other line, a user's included, stays."""

from __future__ import annotations

import ipaddress


def append_records(hosts: str, records: list[str]) -> str:
    """`hosts` with `records` ("address<TAB>names") appended, as etchosts.Add."""
    if hosts and not hosts.endswith("\n"):
        hosts += "\n"
    return hosts + "".join(f"{record}\n" for record in records)


def delete_records(hosts: str, records: list[str]) -> str:
    """`hosts` less the lines naming exactly a record's names at its address,
    as etchosts.Delete (which also drops blank lines); a line the user
    changed stays."""
    wanted = [_parse_record(record) for record in records]
    kept = [line for line in hosts.splitlines()
            if line and (line.startswith("#") or not any(
                _names_at(line, address, names) for address, names in wanted))]
    return "".join(f"{line}\n" for line in kept)


def _parse_record(record: str) -> tuple[str, str]:
    address, _, names = record.partition("\t")
    return address, names


def _names_at(line: str, address: str, names: str) -> bool:
    suffix = "\t" + names
    if not line.endswith(suffix):
        return False
    try:
        return (ipaddress.ip_address(line.removesuffix(suffix).strip())
                == ipaddress.ip_address(address))
    except ValueError:
        return False
