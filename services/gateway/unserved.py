"""Docker API routes berth does not serve, answered as a dockerd that is not
in a swarm and has no plugins answers them (moby's daemon/cluster and
daemon/pkg/plugin messages), so clients and test helpers that probe them
(`docker swarm leave`, the SDK's swarm fixtures) behave as with Docker."""

from __future__ import annotations

from aiohttp import web

from services.gateway.backends import Backends
from services.gateway.errors import HTTPError
from services.gateway.routing import Handler, Route

NOT_A_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or '
                 '"docker swarm join" to connect this node to swarm and try again.')
NOT_IN_A_SWARM = "This node is not part of a swarm"
NO_CLUSTER_VOLUMES = ("volume update only valid for cluster volumes, but swarm is "
                      "unavailable")
NO_SWARM_MODE = "swarm mode is not supported by berth"
NO_PLUGIN_INSTALLS = "managed plugins are not supported by berth"

# moby's router/swarm routes that need a manager.
MANAGER_ROUTES = [
    ("GET", "/swarm"), ("GET", "/swarm/unlockkey"), ("POST", "/swarm/update"),
    ("POST", "/swarm/unlock"),
    ("GET", "/services"), ("GET", "/services/{id}"), ("POST", "/services/create"),
    ("POST", "/services/{id}/update"), ("DELETE", "/services/{id}"),
    ("GET", "/services/{id}/logs"),
    ("GET", "/nodes"), ("GET", "/nodes/{id}"), ("DELETE", "/nodes/{id}"),
    ("POST", "/nodes/{id}/update"),
    ("GET", "/tasks"), ("GET", "/tasks/{id}"), ("GET", "/tasks/{id}/logs"),
    *[(method, f"/{kind}{path}") for kind in ("secrets", "configs")
      for method, path in (("GET", ""), ("POST", "/create"), ("DELETE", "/{id}"),
                           ("GET", "/{id}"), ("POST", "/{id}/update"))],
]
PLUGIN = "{name:.+}"


def _fails(status: int, message: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        raise HTTPError(status, message)
    return handler


async def _no_plugins(request: web.Request) -> web.Response:
    return web.json_response([])


async def _plugin_not_found(request: web.Request) -> web.Response:
    raise HTTPError(404, f'plugin "{request.match_info["name"]}" not found')


def routes(backends: Backends) -> list[Route]:
    manager = _fails(503, NOT_A_MANAGER)
    return [
        *[Route(method, path, manager) for method, path in MANAGER_ROUTES],
        Route("POST", "/swarm/leave", _fails(503, NOT_IN_A_SWARM)),
        Route("POST", "/swarm/init", _fails(501, NO_SWARM_MODE)),
        Route("POST", "/swarm/join", _fails(501, NO_SWARM_MODE)),
        Route("PUT", "/volumes/{name}", _fails(503, NO_CLUSTER_VOLUMES)),
        Route("GET", "/plugins", _no_plugins),
        Route("GET", "/plugins/privileges", _fails(501, NO_PLUGIN_INSTALLS)),
        Route("POST", "/plugins/pull", _fails(501, NO_PLUGIN_INSTALLS)),
        Route("POST", "/plugins/create", _fails(501, NO_PLUGIN_INSTALLS)),
        Route("GET", f"/plugins/{PLUGIN}/json", _plugin_not_found),
        Route("DELETE", f"/plugins/{PLUGIN}", _plugin_not_found),
        *[Route("POST", f"/plugins/{PLUGIN}/{action}", _plugin_not_found)
          for action in ("enable", "disable", "push", "upgrade", "set")],
    ]
