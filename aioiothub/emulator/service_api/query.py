"""The query subset: ``POST /devices/query`` with ``SELECT * FROM devices [WHERE …]``.

Supported: ``SELECT * FROM devices`` (device twins) or ``FROM devices.modules`` (module twins), and
a ``WHERE`` clause of comparisons joined by ``AND``, ``OR``, ``NOT`` and parentheses. A comparison
is ``path op literal``: ``path`` is a dotted twin path (``tags.location.city``,
``properties.reported.fw``, ``deviceId``, ``status``, ``connectionState``, …), ``op`` one of
``= != <> < <= > >=``, and the literal a quoted string, a number, ``true``, ``false`` or ``null``.
A path that is not defined compares false with everything, as in IoT Hub. Anything else is
refused with 400. Results come a page at a time (``x-ms-max-item-count``, default 100) with
``x-ms-continuation`` for the next page, and ``x-ms-item-type: twin``. Needs ``ServiceConnect``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from aioiothub.emulator.rest.https import HttpRequest, HttpResponse, Router
from aioiothub.emulator.service_api.context import ServiceContext
from aioiothub.emulator.service_api.errors import service_error
from aioiothub.emulator.service_api.twins import twin_json

__all__ = ["QuerySyntaxError", "compile_query", "install_query"]

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN: Final = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*'|\"[^\"]*\")|(?P<number>-?\d+(?:\.\d+)?)|(?P<op><>|!=|<=|>=|=|<|>)"
    r"|(?P<paren>[()])|(?P<star>\*)|(?P<word>[A-Za-z_$][A-Za-z0-9_$.]*))"
)
_SELECT: Final = re.compile(r"^\s*SELECT\s+\*\s+FROM\s+(devices(?:\.modules)?)\b(.*)$", re.IGNORECASE | re.DOTALL)
_DEFAULT_PAGE: Final = 100
_MISSING: Final = object()


class QuerySyntaxError(ValueError):
    """The query is outside the supported subset."""


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise QuerySyntaxError(f"cannot read the query at {text[position:position + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _literal(kind: str, text: str) -> Any:
    if kind == "string":
        return text[1:-1].replace("''", "'") if text[0] == "'" else text[1:-1]
    if kind == "number":
        return float(text) if "." in text else int(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    raise QuerySyntaxError(f"expected a literal, got {text!r}")


def _lookup(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for name in path.split("."):
        if not isinstance(value, dict) or name not in value:
            return _MISSING
        value = value[name]
    return value


def _compare(value: Any, op: str, literal: Any) -> bool:
    if value is _MISSING:
        return False
    if op == "=":
        return bool(value == literal)
    if op in ("!=", "<>"):
        return bool(value != literal)
    numbers = isinstance(value, int | float) and isinstance(literal, int | float)
    if not numbers and not (isinstance(value, str) and isinstance(literal, str)):
        return False
    return bool({"<": value < literal, "<=": value <= literal, ">": value > literal, ">=": value >= literal}[op])


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek_word(self) -> str:
        if self.position < len(self.tokens) and self.tokens[self.position][0] == "word":
            return self.tokens[self.position][1].upper()
        return ""

    def take(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise QuerySyntaxError("the query ends too early")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expression(self) -> Predicate:
        terms = [self.conjunction()]
        while self.peek_word() == "OR":
            self.take()
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else (lambda doc: any(term(doc) for term in terms))

    def conjunction(self) -> Predicate:
        factors = [self.factor()]
        while self.peek_word() == "AND":
            self.take()
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else (lambda doc: all(factor(doc) for factor in factors))

    def factor(self) -> Predicate:
        if self.peek_word() == "NOT":
            self.take()
            inner = self.factor()
            return lambda doc: not inner(doc)
        kind, text = self.take()
        if kind == "paren" and text == "(":
            inner = self.expression()
            if self.take() != ("paren", ")"):
                raise QuerySyntaxError("a '(' is not closed")
            return inner
        if kind != "word":
            raise QuerySyntaxError(f"expected a property path, got {text!r}")
        path = text
        op_kind, op = self.take()
        if op_kind != "op":
            raise QuerySyntaxError(f"expected a comparison after {path!r}, got {op!r}")
        literal = _literal(*self.take())
        return lambda doc: _compare(_lookup(doc, path), op, literal)


def compile_query(text: str) -> tuple[bool, Predicate]:
    """Parse a query of the supported subset.

    Example:
        >>> modules, matches = compile_query("SELECT * FROM devices WHERE tags.site = 'b1' AND status = 'enabled'")
        >>> modules, matches({"tags": {"site": "b1"}, "status": "enabled"}), matches({"tags": {}})
        (False, True, False)

    Returns:
        ``(module twins wanted, predicate on a twin document)``.

    Raises:
        QuerySyntaxError: the query is outside the subset.
    """
    match = _SELECT.match(text)
    if match is None:
        raise QuerySyntaxError("only 'SELECT * FROM devices [WHERE …]' and 'FROM devices.modules' are supported")
    modules = match.group(1).lower() == "devices.modules"
    tokens = _tokens(match.group(2))
    if not tokens:
        return modules, lambda doc: True
    if tokens[0] != ("word", tokens[0][1]) or tokens[0][1].upper() != "WHERE":
        raise QuerySyntaxError(f"expected WHERE, got {tokens[0][1]!r}")
    parser = _Parser(tokens[1:])
    predicate = parser.expression()
    if parser.position != len(parser.tokens):
        raise QuerySyntaxError(f"unexpected {parser.tokens[parser.position][1]!r}")
    return modules, predicate


def install_query(router: Router, context: ServiceContext) -> None:
    """Add ``POST /devices/query`` to ``router``."""

    async def query(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "ServiceConnect")
        body = context.json_object(request)
        text = body.get("query")
        if not isinstance(text, str):
            raise service_error(400, "ArgumentInvalid", "the body needs a 'query' string")
        try:
            modules, predicate = compile_query(text)
        except QuerySyntaxError as exc:
            raise service_error(400, "BadRequest", f"unsupported query: {exc}") from None
        size_text = request.headers.get("x-ms-max-item-count", "")
        size = int(size_text) if size_text.isdigit() and int(size_text) > 0 else _DEFAULT_PAGE
        start_text = request.headers.get("x-ms-continuation", "")
        start = int(start_text) if start_text.isdigit() else 0
        identities = [i for i in context.hub.identities() if (i.module_id is not None) == modules]
        documents = [document for document in map(lambda i: twin_json(context, i), identities) if predicate(document)]
        page = documents[start : start + size]
        headers = [("x-ms-item-type", "twin")]
        if start + size < len(documents):
            headers.append(("x-ms-continuation", str(start + size)))
        return HttpResponse.json(200, page, headers)

    router.add("POST", "/devices/query", query)
