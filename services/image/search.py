"""Docker's image search: the v1 search API of the registry the term names
(Docker Hub's index when it names none), with moby's checks, limit and
filters. Registries without v1 search answer 404, which is Docker's
"unexpected status code 404" error."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import Internal, InvalidArgument
from services.common.filters import Filters
from services.image.registry import Credentials, Registries

SEARCH_FILTERS = {"is-automated", "is-official", "stars"}
DEFAULT_LIMIT = 25
HUB_INDEX = "https://index.docker.io"


@dataclass
class SearchResult:
    name: str
    description: str
    star_count: int
    is_official: bool


def split_term(term: str) -> tuple[str, str]:
    """The registry and the remote name, as moby's splitReposSearchTerm."""
    first, sep, rest = term.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        return "docker.io", term
    return first, rest


def _min_stars(filters: Filters) -> int:
    least = 0
    for value in filters.get("stars"):
        try:
            least = max(least, int(value))
        except ValueError:
            raise InvalidArgument(f"invalid filter 'stars={value}'") from None
    return least


async def search(registries: Registries, term: str, limit: int, filters: Filters,
                 creds: Credentials) -> list[SearchResult]:
    filters.checked(SEARCH_FILTERS)
    if filters.boolean("is-automated", False):
        return []
    official = filters.flag("is-official")
    stars = _min_stars(filters)
    if "://" in term:
        raise InvalidArgument(f"invalid repository name: repository name ({term}) should "
                              f"not have a scheme")
    limit = limit or DEFAULT_LIMIT
    if not 1 <= limit <= 100:
        raise InvalidArgument(f"limit {limit} is outside the range of [1, 100]")
    domain, remote = split_term(term)
    if domain == "docker.io":
        session = registries.session(domain, creds, [], HUB_INDEX)
        remote = remote.removeprefix("library/")
    else:
        session = await registries.open(domain, creds, [])
    response = await session.request("GET", f"{session.base_url}/v1/search",
                                      params={"q": remote, "n": str(limit)},
                                      headers={"X-Docker-Token": "true"})
    if response.status_code != 200:
        raise Internal(f"unexpected status code {response.status_code}")
    try:
        found = response.json().get("results") or []
    except ValueError as exc:
        raise Internal(f"error decoding registry search results: {exc}") from exc
    results = [SearchResult(name=r.get("name", ""), description=r.get("description", ""),
                            star_count=int(r.get("star_count", 0)),
                            is_official=bool(r.get("is_official", False))) for r in found]
    return [r for r in results
            if (official is None or r.is_official == official) and r.star_count >= stars]
