"""`.dockerignore` rules, matched with the Docker SDK's port of Docker's
pattern matcher (`**`, `!` exceptions, `..` cleaning, parent directories)."""

from __future__ import annotations

from docker.utils.build import Pattern, PatternMatcher


def read_patterns(text: str) -> list[str]:
    """Patterns from a .dockerignore: trimmed lines, no blanks or comments."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class Ignore:
    """Answers whether a context path is excluded from the build."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = patterns
        self._matcher = PatternMatcher(patterns) if patterns else None
        self._patterns = [Pattern(p) for p in patterns]

    def excluded(self, path: str) -> bool:
        path = path.strip("/")
        if self._matcher is None or path in ("", "."):
            return False
        return bool(self._matcher.matches(path))

    def names(self, path: str) -> bool:
        """Whether the patterns exclude top-level file `path`, even
        .dockerignore (which the matcher always keeps): Docker removes the
        Dockerfile and .dockerignore after reading them when they do."""
        matched = False
        for pattern in self._patterns:
            if pattern.match(path.strip("/")):
                matched = not pattern.exclusion
        return matched
