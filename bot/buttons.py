"""Typed button ids, declared once as templates and routed by their prefix.

An id carries its own state (``poll:42:option:3``), so a button still works after a restart,
in the spirit of discord.py's ``DynamicItem``. A template is the single place where the shape
of an id is written: ``build`` makes ids, ``parse`` reads them back, and nothing else slices
ids by hand.

Template syntax: literal text with typed fields, ``{name:int}`` (a non-negative integer up to
2**63-1), ``{name:str}`` (1 to 40 characters, none of them ``:``, control or whitespace) and
``{name:choice(a|b|c)}`` (one of a fixed set). The literal before the first ``:`` is the
prefix that ``ButtonRoutes`` uses to find the template of an id.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

# Telegram's callback_data holds 64 bytes; Discord's custom_id allows 100 characters, which is
# never less. Building against the stricter limit lets one id serve both platforms.
MAX_ID_BYTES = 64
# Ids usually come from BIGINT columns; anything larger is forged.
MAX_INT = 2**63 - 1
MAX_STR_CHARS = 40

ButtonValues = dict[str, int | str]
H = TypeVar("H")

_FieldKind = Literal["int", "str", "choice"]
_INT_REGEX = r"0|[1-9][0-9]{0,18}"  # [0-9], not \d: \d also matches "٣" and other digits
_STR_REGEX = rf"[^:]{{1,{MAX_STR_CHARS}}}"  # finer rules are checked by _is_text_char
_FIELD_RE = re.compile(r"\{([^{}]*)\}")
_CHOICE_RE = re.compile(r"choice\((.*)\)", re.DOTALL)


class ButtonIdError(ValueError):
    """A button id that cannot be built from the given values."""


def _is_text_char(char: str) -> bool:
    """Whether ``char`` may appear in the value of a str field."""
    # ":" separates fields. Control, format and whitespace characters are invisible in logs and
    # may be stripped or normalised by a client, which would turn a valid id into a forgery.
    return char != ":" and char.isprintable() and not char.isspace()


def _is_text(text: str) -> bool:
    """Whether ``text`` is a valid str field value (or choice option)."""
    return 0 < len(text) <= MAX_STR_CHARS and all(_is_text_char(c) for c in text)


def _utf8_size(text: str) -> int:
    """The size of ``text`` in UTF-8, without raising on lone surrogates."""
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class _Field:
    """One typed field of a template."""

    name: str
    kind: _FieldKind
    options: tuple[str, ...] = ()

    def regex(self) -> str:
        """The regular expression of the field's text, as a named group."""
        if self.kind == "int":
            body = _INT_REGEX
        elif self.kind == "str":
            body = _STR_REGEX
        else:
            body = "|".join(re.escape(option) for option in self.options)
        return f"(?P<{self.name}>{body})"

    def render(self, value: object) -> str:
        """The text of ``value`` in an id; raises ButtonIdError if the value does not fit."""
        if self.kind == "int":
            # bool is an int to Python, but True in an id is a bug, not the number 1.
            if not isinstance(value, int) or isinstance(value, bool):
                raise ButtonIdError(f"field {self.name!r} needs an int, got {value!r:.60}")
            if not 0 <= value <= MAX_INT:
                raise ButtonIdError(f"field {self.name!r} must be in 0..2**63-1, got {value}")
            return str(int(value))  # int(): an IntEnum renders as its number
        if not isinstance(value, str):
            raise ButtonIdError(f"field {self.name!r} needs a str, got {value!r:.60}")
        text = str.__str__(value)  # the plain text of a str subclass such as a StrEnum
        if self.kind == "choice":
            if text not in self.options:
                raise ButtonIdError(
                    f"field {self.name!r} must be one of {'|'.join(self.options)}, got {text!r:.60}"
                )
        elif not _is_text(text):
            raise ButtonIdError(
                f"field {self.name!r} needs 1..{MAX_STR_CHARS} characters without ':',"
                f" control or whitespace characters, got {text!r:.60}"
            )
        return text

    def read(self, text: str) -> int | str | None:
        """The value of a field's text that the regular expression matched, or None."""
        if self.kind == "int":
            number = int(text)
            return number if number <= MAX_INT else None
        if self.kind == "str" and not all(_is_text_char(c) for c in text):
            return None
        return text


_Token = str | _Field


def _parse_field(spec: str, template: str) -> _Field:
    """The field described by the text between braces."""
    name, colon, kind = spec.partition(":")
    if not colon:
        raise ValueError(f"field {{{spec}}} in {template!r} has no type (e.g. {{{spec}:int}})")
    # Names become keyword arguments of build() and named groups of the regex.
    if not (name.isascii() and name.isidentifier()) or keyword.iskeyword(name):
        raise ValueError(f"field name {name!r} in {template!r} is not a plain identifier")
    if kind in ("int", "str"):
        return _Field(name, "int" if kind == "int" else "str")
    choice = _CHOICE_RE.fullmatch(kind)
    if choice is None:
        raise ValueError(f"field {name!r} in {template!r} has unknown type {kind!r}")
    options = tuple(choice.group(1).split("|"))
    for option in options:
        if not _is_text(option) or "(" in option or ")" in option:
            raise ValueError(f"choice option {option!r} of field {name!r} is not valid")
    if len(set(options)) != len(options):
        raise ValueError(f"field {name!r} in {template!r} repeats a choice option")
    return _Field(name, "choice", options)


def _tokenize(template: str) -> list[_Token]:
    """The literals and fields of a template, in order, with no empty literal."""
    tokens: list[_Token] = []
    position = 0
    for found in _FIELD_RE.finditer(template):
        if found.start() > position:
            tokens.append(template[position : found.start()])
        tokens.append(_parse_field(found.group(1), template))
        position = found.end()
    if position < len(template):
        tokens.append(template[position:])
    return tokens


def _check_tokens(tokens: list[_Token], template: str) -> None:
    """Refuse templates whose ids could not be parsed back unambiguously."""
    names: set[str] = set()
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if isinstance(token, str):
            for char in token:
                if char in "{}" or not char.isprintable() or char.isspace():
                    raise ValueError(f"literal text of {template!r} contains {char!r}")
            continue
        if token.name in names:
            raise ValueError(f"field name {token.name!r} appears twice in {template!r}")
        names.add(token.name)
        if isinstance(following, _Field):
            raise ValueError(
                f"fields {token.name!r} and {following.name!r} in {template!r} need a literal"
                " separator between them"
            )
        # Where a field ends must follow from the text alone: digits stop at a non-digit, and
        # str/choice values (which never contain ":") stop at a ":" or at the end of the id.
        if following is None:
            continue
        if token.kind == "int" and following[0] in "0123456789":
            raise ValueError(f"int field {token.name!r} in {template!r} is followed by a digit")
        if token.kind != "int" and not following.startswith(":"):
            raise ValueError(
                f"{token.kind} field {token.name!r} in {template!r} must be followed by ':' or"
                " end the template"
            )


def _prefix_of(tokens: list[_Token], template: str) -> str:
    """The literal that starts every id of the template, up to its first ':'."""
    first = tokens[0] if tokens else ""
    if not isinstance(first, str) or not first or first.startswith(":"):
        raise ValueError(f"template {template!r} must start with a literal prefix")
    prefix, colon, _ = first.partition(":")
    # The router finds the prefix of an id by cutting at its first ":", so the prefix must
    # end there (or be the whole id): "poll{id:int}" would give "poll42", not "poll".
    if not colon and len(tokens) > 1:
        raise ValueError(f"prefix {prefix!r} of {template!r} must be followed by ':'")
    return prefix


# Character classes of the automata that compare two templates: one character, the digits,
# the digits without zero, or any character a str field accepts.
_Chars = tuple[Literal["char", "digit", "nonzero", "text"], str]
_DIGIT: _Chars = ("digit", "")
_NONZERO: _Chars = ("nonzero", "")
_TEXT: _Chars = ("text", "")


def _contains(chars: _Chars, char: str) -> bool:
    """Whether the class ``chars`` holds the single character ``char``."""
    kind, own = chars
    if kind == "char":
        return own == char
    if kind == "digit":
        return char in "0123456789"
    if kind == "nonzero":
        return char in "123456789"
    return _is_text_char(char)


def _intersects(a: _Chars, b: _Chars) -> bool:
    """Whether some character belongs to both classes."""
    if a[0] == "char":
        return _contains(b, a[1])
    if b[0] == "char":
        return _contains(a, b[1])
    return True  # digit, nonzero and text all hold "1"


@dataclass(frozen=True, slots=True)
class _Automaton:
    """A nondeterministic automaton that accepts (a superset of) a template's ids."""

    moves: tuple[tuple[tuple[_Chars, int], ...], ...]
    empty_moves: tuple[tuple[int, ...], ...]
    accept: int

    @classmethod
    def of(cls, tokens: list[_Token]) -> _Automaton:
        """The automaton of a template's tokens (lengths of fields are not bounded)."""
        moves: list[list[tuple[_Chars, int]]] = [[]]
        empty: list[list[int]] = [[]]

        def state() -> int:
            moves.append([])
            empty.append([])
            return len(moves) - 1

        current = 0
        for token in tokens:
            if isinstance(token, str):
                for char in token:
                    following = state()
                    moves[current].append((("char", char), following))
                    current = following
            elif token.kind == "int":
                end, more = state(), state()
                moves[current].append((("char", "0"), end))
                moves[current].append((_NONZERO, more))
                moves[more].append((_DIGIT, more))
                empty[more].append(end)
                current = end
            elif token.kind == "str":
                more = state()
                moves[current].append((_TEXT, more))
                moves[more].append((_TEXT, more))
                current = more
            else:
                end = state()
                for option in token.options:
                    at = current
                    for index, char in enumerate(option):
                        following = end if index == len(option) - 1 else state()
                        moves[at].append((("char", char), following))
                        at = following
                current = end
        return cls(tuple(map(tuple, moves)), tuple(map(tuple, empty)), current)

    def meets(self, other: _Automaton) -> bool:
        """Whether some id is accepted by both automata (a search of their product)."""
        seen = {(0, 0)}
        todo = [(0, 0)]
        while todo:
            mine, theirs = todo.pop()
            if mine == self.accept and theirs == other.accept:
                return True
            steps = [(m, theirs) for m in self.empty_moves[mine]]
            steps += [(mine, t) for t in other.empty_moves[theirs]]
            steps += [
                (m, t)
                for chars, m in self.moves[mine]
                for other_chars, t in other.moves[theirs]
                if _intersects(chars, other_chars)
            ]
            for step in steps:
                if step not in seen:
                    seen.add(step)
                    todo.append(step)
        return False


class ButtonTemplate:
    """The shape of a family of button ids, e.g. ``poll:{id:int}:option:{n:int}``."""

    __slots__ = ("_automaton", "_fields", "_prefix", "_regex", "_template", "_tokens")

    def __init__(self, template: str) -> None:
        tokens = _tokenize(template)
        self._prefix = _prefix_of(tokens, template)
        _check_tokens(tokens, template)
        self._template = template
        self._tokens = tuple(tokens)
        self._fields = {t.name: t for t in tokens if isinstance(t, _Field)}
        self._regex = re.compile(
            "".join(t.regex() if isinstance(t, _Field) else re.escape(t) for t in tokens)
        )
        self._automaton: _Automaton | None = None
        smallest = sum(_utf8_size(t) if isinstance(t, str) else 1 for t in tokens)
        if smallest > MAX_ID_BYTES:
            raise ValueError(f"no id of {template!r} fits in {MAX_ID_BYTES} bytes")

    @property
    def template(self) -> str:
        """The template as written."""
        return self._template

    @property
    def prefix(self) -> str:
        """The literal before the first field or ':', used to route ids."""
        return self._prefix

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the fields, in order."""
        return tuple(self._fields)

    @property
    def regex(self) -> re.Pattern[str]:
        """A regex with one named group per field, e.g. for a discord.py DynamicItem template."""
        # It only checks the shape of an id: parse() also checks ranges, characters and size.
        return self._regex

    def build(self, **values: int | str) -> str:
        """The id for ``values``; raises ButtonIdError if they do not fit the template."""
        missing = [name for name in self._fields if name not in values]
        extra = [name for name in values if name not in self._fields]
        if missing or extra:
            raise ButtonIdError(
                f"{self._template!r} needs fields {list(self._fields)}:"
                f" missing {missing}, unexpected {extra}"
            )
        data = "".join(
            t.render(values[t.name]) if isinstance(t, _Field) else t for t in self._tokens
        )
        size = _utf8_size(data)
        if size > MAX_ID_BYTES:
            # Caught here rather than by the platform, which would refuse the whole message.
            raise ButtonIdError(f"id {data!r} is {size} bytes; the limit is {MAX_ID_BYTES}")
        return data

    def parse(self, data: str) -> ButtonValues | None:
        """The values of an id built by this template, or None for anything else."""
        # Anything that build() could not have produced is refused: parse(d) is not None
        # exactly when d == build(**parse(d)). The length test first keeps junk cheap.
        if not isinstance(data, str) or len(data) > MAX_ID_BYTES:
            return None
        found = self._regex.fullmatch(data)
        if found is None or _utf8_size(data) > MAX_ID_BYTES:
            return None
        values: ButtonValues = {}
        for name, text in found.groupdict().items():
            value = self._fields[name].read(text)
            if value is None:
                return None
            values[name] = value
        return values

    def overlaps(self, other: ButtonTemplate) -> bool:
        """Whether some id could match both templates (conservative: may say yes wrongly)."""
        if self._prefix != other._prefix:
            return False
        return self._automate().meets(other._automate())

    def _automate(self) -> _Automaton:
        """The template's automaton, built on first use (only routing needs it)."""
        if self._automaton is None:
            self._automaton = _Automaton.of(list(self._tokens))
        return self._automaton

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ButtonTemplate):
            return NotImplemented
        return self._template == other._template

    def __hash__(self) -> int:
        return hash(self._template)

    def __repr__(self) -> str:
        return f"ButtonTemplate({self._template!r})"


class ButtonRoutes(Generic[H]):
    """Templates and their handlers, found by the prefix of an id."""

    __slots__ = ("_by_prefix", "_count")

    def __init__(
        self, routes: Mapping[ButtonTemplate, H] | Iterable[tuple[ButtonTemplate, H]]
    ) -> None:
        pairs: Iterable[tuple[ButtonTemplate, H]] = (
            routes.items() if isinstance(routes, Mapping) else routes
        )
        by_prefix: dict[str, list[tuple[ButtonTemplate, H]]] = {}
        count = 0
        for template, handler in pairs:
            bucket = by_prefix.setdefault(template.prefix, [])
            # Only templates with the same prefix can match the same id.
            for other, _ in bucket:
                if template.overlaps(other):
                    raise ValueError(f"{template!r} and {other!r} could both match one id")
            bucket.append((template, handler))
            count += 1
        self._by_prefix = {prefix: tuple(bucket) for prefix, bucket in by_prefix.items()}
        self._count = count

    def match(self, data: str) -> tuple[ButtonTemplate, H, ButtonValues] | None:
        """The template, handler and values for an id, or None if no template matches."""
        # Ids come from clients and may be anything: refuse without raising.
        if not isinstance(data, str) or len(data) > MAX_ID_BYTES:
            return None
        for template, handler in self._by_prefix.get(data.partition(":")[0], ()):
            values = template.parse(data)
            if values is not None:
                return template, handler, values
        return None

    def __iter__(self) -> Iterator[tuple[ButtonTemplate, H]]:
        for bucket in self._by_prefix.values():
            yield from bucket

    def __len__(self) -> int:
        return self._count
