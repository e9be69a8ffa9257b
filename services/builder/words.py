"""Dockerfile word processing: quotes, escapes and `$var` substitution.

The `dockerfile` package gives instruction arguments as written (quotes and
`$` references kept); the builder expands them the way Docker's shell lexer
does before using them. Supported forms: `$name`, `${name}`, `${name:-word}`,
`${name-word}`, `${name:+word}`, `${name+word}`, `${name:?message}`,
`${name?message}`.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.common.errors import InvalidArgument

_EOF = ""


class _Words:
    """Splits output on unquoted whitespace (for ProcessWords)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self._current = ""
        self._started = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            self._flush()
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self._current += text
        self._started = True

    def add_expanded(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def _flush(self) -> None:
        if self._started:
            self.words.append(self._current)
        self._current = ""
        self._started = False

    def finish(self) -> list[str]:
        self._flush()
        return self.words


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        ch = self.peek()
        self.pos += len(ch)
        return ch

    def process(self, stop: str = _EOF, words: _Words | None = None) -> str:
        words = words or _Words()
        result = []
        while self.peek() != _EOF:
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result)
            if ch in ("'", '"', "$"):
                piece = {"'": self.single_quote, '"': self.double_quote,
                         "$": self.dollar}[ch]()
                if ch == "$":
                    words.add_expanded(piece)
                else:
                    words.add_raw(piece)
                result.append(piece)
                continue
            ch = self.next()
            if ch == self.escape:
                ch = self.next()
                if ch == _EOF:
                    break
                words.add_raw(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise InvalidArgument(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result)

    def single_quote(self) -> str:
        self.next()
        end = self.text.find("'", self.pos)
        if end < 0:
            raise InvalidArgument(
                "unexpected end of statement while looking for matching single-quote")
        value = self.text[self.pos:end]
        self.pos = end + 1
        return value

    def double_quote(self) -> str:
        self.next()
        result = []
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise InvalidArgument(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(result)
            if ch == "$":
                result.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape and self.peek() in ('"', "$", self.escape):
                ch = self.next()
            result.append(ch)

    def name(self) -> str:
        if self.peek().isdigit():
            return self.next()
        start = self.pos
        while self.peek() != _EOF and (self.peek().isalnum() or self.peek() == "_"):
            self.next()
        return self.text[start:self.pos]

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.next()
        name = self.name()
        ch = self.next()
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        modifier = self.next() if colon else ch
        if modifier not in ("-", "+", "?"):
            if colon:
                raise InvalidArgument(f"unsupported modifier ({modifier}) in substitution")
            raise InvalidArgument("missing ':' in substitution")
        word = self.process(stop="}")
        is_set = name in self.env
        value = self.env.get(name, "")
        present = bool(value) if colon else is_set
        if modifier == "-":
            return value if present else word
        if modifier == "+":
            return word if present else ""
        if not present:
            raise InvalidArgument(f"{name}: {word or 'is not allowed to be unset'}")
        return value


def process_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word, quotes removed and variables substituted (ENV, COPY, ...)."""
    return _Lexer(text, env, escape).process()


def process_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Like process_word, then split on unquoted whitespace (EXPOSE)."""
    words = _Words()
    _Lexer(text, env, escape).process(words=words)
    return words.finish()
