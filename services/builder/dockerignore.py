"""`.dockerignore` rules, matched with the Docker SDK's port of Docker's
pattern matcher (`**`, `!` exceptions, `..` cleaning, parent directories)."""

from __future__ import annotations

from docker.utils.build import Pattern, PatternMatcher, normalize_slashes
from docker.utils.fnmatch import translate

from services.common import goregexp


def read_patterns(text: str) -> list[str]:
    """Patterns from a .dockerignore: trimmed lines, no blanks or comments."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class _LinearPattern(Pattern):
    """The SDK's pattern with its regular expression run by RE2, as Go's
    is: Python's re takes exponential time on a .dockerignore line such as
    **/**/**/**/**/**/**/**/**/**/x. The SDK's match lowercases both sides."""

    def __init__(self, pattern: Pattern) -> None:
        super().__init__(("!" if pattern.exclusion else "") + pattern.cleaned_pattern)
        self._regexp = goregexp.compile(translate(self.cleaned_pattern.lower()))

    def match(self, filepath: str) -> bool:
        return self._regexp.match(normalize_slashes(filepath).lower()) is not None


class _LinearMatcher(PatternMatcher):
    def __init__(self, patterns: list[str]) -> None:
        super().__init__(patterns)
        self.patterns = [_LinearPattern(p) for p in self.patterns]


class Ignore:
    """Answers whether a context path is excluded from the build."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = patterns
        self._matcher = _LinearMatcher(patterns) if patterns else None
        self._patterns = [_LinearPattern(Pattern(p)) for p in patterns]

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
