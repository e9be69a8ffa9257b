"""Legacy links as moby's daemon/links writes them."""

from __future__ import annotations

from services.container.links import Link


def test_parse_and_store() -> None:
    assert Link.parse("db") == Link("db", "db")
    assert Link.parse("db:main") == Link("db", "main")
    assert Link.parse("/db:/web/main") == Link("db", "main")
    assert Link("db", "main").stored("web") == "/db:/web/main"


def test_hosts_entry_names_the_alias_hostname_and_name() -> None:
    assert Link("db", "main").hosts_entry("0123456789ab", "172.17.0.2") == \
        "main 0123456789ab db:172.17.0.2"
    assert Link("db", "db").hosts_entry("0123456789ab", "172.17.0.2") == \
        "db 0123456789ab:172.17.0.2"


def test_environment_default_port_is_the_lowest_and_tcp_first() -> None:
    env = Link("db", "my-db").environment("web", "10.0.0.2", ["80/udp", "80/tcp", "5432/tcp"],
                                          ["PATH=/bin", "HOME=/root", "USER=pg", "BAD"])
    assert env[0] == "MY_DB_PORT=tcp://10.0.0.2:80"
    assert env[1:5] == ["MY_DB_PORT_80_TCP=tcp://10.0.0.2:80", "MY_DB_PORT_80_TCP_ADDR=10.0.0.2",
                        "MY_DB_PORT_80_TCP_PORT=80", "MY_DB_PORT_80_TCP_PROTO=tcp"]
    assert env[5] == "MY_DB_PORT_80_UDP=udp://10.0.0.2:80"
    assert env[-2:] == ["MY_DB_NAME=/web/my-db", "MY_DB_ENV_USER=pg"]
    assert Link("db", "db").environment("web", "10.0.0.2", [], []) == ["DB_NAME=/web/db"]
