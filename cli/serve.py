"""`berth serve SERVICE`: run one service in this process."""

from __future__ import annotations

import asyncio
import importlib
import logging

from services.common import server
from services.common.config import Config


def serve(service: str, config: Config) -> int:
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {service} %(levelname)s %(message)s")
    module = importlib.import_module(f"services.{service}.server")
    asyncio.run(server.run(service, config, module.setup))
    return 0
