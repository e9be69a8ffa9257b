"""`docker system df` gathers images, containers, volumes and build cache."""

from __future__ import annotations

import json

from tests.support.engine import Engine


def test_system_df_counts_every_kind(engine: Engine, busybox: str) -> None:
    engine.docker("volume", "create", "dfvol")
    engine.docker("run", "--name", "dfc", "-v", "dfvol:/data", busybox,
                  "sh", "-c", "head -c 100000 /dev/zero > /data/blob")
    usage = engine.client().df()
    assert usage["LayersSize"] > 0
    image = next(i for i in usage["Images"] if "busybox:latest" in i["RepoTags"])
    assert image["Containers"] == 1
    container = next(c for c in usage["Containers"] if "/dfc" in c["Names"])
    assert container["SizeRw"] >= 0
    volume = next(v for v in usage["Volumes"] if v["Name"] == "dfvol")
    assert volume["UsageData"]["RefCount"] == 1
    assert volume["UsageData"]["Size"] >= 100000
    assert isinstance(usage["BuildCache"], list)

    table = engine.docker("system", "df", "--format", "{{json .}}").stdout.decode()
    kinds = {json.loads(line)["Type"] for line in table.splitlines()}
    assert kinds == {"Images", "Containers", "Local Volumes", "Build Cache"}
    verbose = engine.docker("system", "df", "-v").stdout.decode()
    assert "dfvol" in verbose and "dfc" in verbose
    engine.docker("rm", "dfc")
    engine.docker("volume", "rm", "dfvol")


def test_system_df_type_filter(engine: Engine, busybox: str) -> None:
    usage = engine.client().api.get(engine.client().api._url("/system/df"),
                                    params={"type": "volume"}).json()
    assert set(usage) == {"Volumes"}
