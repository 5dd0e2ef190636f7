"""Parsing of PostgREST's URL grammar: select, filters, logic trees, order, columns.

Only parsing lives here; turning the parsed request into SQL is postgrest.py's job.
Grammar reference: PostgREST docs "Tables and Views", "Resource Embedding", "Operators".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import ApiError, pgrst

OPERATORS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "like": "LIKE",
    "ilike": "ILIKE",
    "match": "~",
    "imatch": "~*",
    "is": "IS",
    "isdistinct": "IS DISTINCT FROM",
    "in": "IN",
    "cs": "@>",
    "cd": "<@",
    "ov": "&&",
    "sl": "<<",
    "sr": ">>",
    "nxl": "&<",
    "nxr": "&>",
    "adj": "-|-",
    "fts": "@@",
    "plfts": "@@",
    "phfts": "@@",
    "wfts": "@@",
}
RESERVED_PARAMS = {"select", "order", "limit", "offset", "on_conflict", "columns", "apikey"}


def bad(message: str, details: str | None = None) -> ApiError:
    return pgrst(400, "PGRST100", message, details)


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside parentheses and double quotes."""
    parts: list[str] = []
    depth = 0
    quoted = False
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and quoted and i + 1 < len(text):
            cur.append(ch + text[i + 1])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


@dataclass
class ColRef:
    name: str
    path: list[tuple[str, str]] = field(default_factory=list)  # [("->", "key"), ("->>", "key")]
    cast: str | None = None

    @property
    def default_alias(self) -> str:
        return self.path[-1][1] if self.path else self.name


def parse_colref(text: str) -> ColRef:
    text = text.strip()
    cast = None
    if "::" in text:
        text, _, cast = text.rpartition("::")
        if not re.fullmatch(r"[\w ]+(\[\])?", cast):
            raise bad(f'"failed to parse select parameter ({text}::{cast})"')
    parts = re.split(r"(->>?)", text)
    name = unquote(parts[0].strip())
    if not name:
        raise bad(f'"failed to parse select parameter ({text})"')
    path = [(parts[i], unquote(parts[i + 1])) for i in range(1, len(parts) - 1, 2)]
    if any(not key for _, key in path):
        raise bad(f'"failed to parse select parameter ({text})"')
    return ColRef(name, path, cast)


@dataclass
class SelectItem:
    kind: str  # "star" | "col" | "embed"
    alias: str | None = None
    col: ColRef | None = None
    rel: str = ""
    hint: str | None = None
    inner: bool = False
    children: list[SelectItem] = field(default_factory=list)


def parse_select(text: str | None) -> list[SelectItem]:
    if not text:
        return [SelectItem("star")]
    items: list[SelectItem] = []
    for raw in split_top(text):
        raw = raw.strip()
        if not raw:
            continue
        if raw == "*":
            items.append(SelectItem("star"))
            continue
        alias = None
        if raw.endswith(")") and "(" in raw:
            head, _, inner = raw.partition("(")
            inner = inner[:-1]
            if ":" in head and "::" not in head:
                alias, _, head = head.partition(":")
            parts = head.split("!")
            rel = parts[0].strip()
            hint = None
            is_inner = False
            for mod in parts[1:]:
                if mod == "inner":
                    is_inner = True
                elif mod == "left":
                    pass
                else:
                    hint = mod
            items.append(
                SelectItem(
                    "embed", alias=alias, rel=rel, hint=hint, inner=is_inner, children=parse_select(inner)
                )
            )
            continue
        m = re.match(r"^([A-Za-z_][\w ]*):(?!:)(.*)$", raw)
        if m:
            alias, raw = m.group(1), m.group(2)
        items.append(SelectItem("col", alias=alias, col=parse_colref(raw)))
    return items


@dataclass
class Cond:
    col: ColRef
    op: str
    value: str
    negate: bool = False
    modifier: str | None = None  # fts language


@dataclass
class Logic:
    op: str  # "and" | "or"
    items: list[Cond | Logic]
    negate: bool = False


def parse_condition(col: str, spec: str) -> Cond:
    """`col` and `[not.]op[(modifier)].value` as in `status=eq.pending`."""
    negate = False
    if spec.startswith("not."):
        negate, spec = True, spec[4:]
    op, dot, value = spec.partition(".")
    modifier = None
    m = re.match(r"^(\w+)\((\w+)\)$", op)
    if m:
        op, modifier = m.group(1), m.group(2)
    if not dot or op not in OPERATORS:
        raise bad(
            f'"failed to parse filter ({spec})" (line 1, column {len(op) + 1})',
            'unexpected "' + (spec[len(op) : len(op) + 1] or "") + '" expecting operator',
        )
    return Cond(parse_colref(col), op, value, negate, modifier)


def parse_logic(key: str, value: str) -> Logic:
    """`or=(a.eq.1,and(b.gt.2,c.is.null))`; key is `or`, `and`, `not.or` or `not.and`."""
    negate = key.startswith("not.")
    op = key[4:] if negate else key
    value = value.strip()
    if not (value.startswith("(") and value.endswith(")")):
        raise bad(
            f'"failed to parse logic tree ({value})" (line 1, column 1)', 'unexpected "(" expecting "("'
        )
    return Logic(op, [_parse_logic_item(part.strip()) for part in split_top(value[1:-1])], negate)


def _parse_logic_item(text: str) -> Cond | Logic:
    m = re.match(r"^(not\.)?(and|or)\((.*)\)$", text, re.S)
    if m:
        return parse_logic((m.group(1) or "") + m.group(2), "(" + m.group(3) + ")")
    col, dot, rest = text.partition(".")
    if not dot:
        raise bad(f'"failed to parse logic tree ({text})" (line 1, column 1)')
    cond = parse_condition(col, rest)
    if cond.op != "in":
        cond.value = unquote(cond.value)  # values in logic trees may be double-quoted
    return cond


def parse_in_list(value: str) -> list[str]:
    value = value.strip()
    if not (value.startswith("(") and value.endswith(")")):
        raise bad(f'"failed to parse filter (in.{value})"', 'unexpected end of input expecting "("')
    inner = value[1:-1]
    if inner == "":
        return []
    return [unquote(v.strip()) for v in split_top(inner)]


@dataclass
class OrderTerm:
    col: ColRef
    desc: bool = False
    nulls: str | None = None  # "first" | "last"


def parse_order(text: str) -> list[OrderTerm]:
    terms = []
    for raw in split_top(text):
        raw = raw.strip()
        if not raw:
            continue
        bits = raw.split(".")
        term = OrderTerm(parse_colref(bits[0]))
        for b in bits[1:]:
            if b == "desc":
                term.desc = True
            elif b == "asc":
                term.desc = False
            elif b == "nullsfirst":
                term.nulls = "first"
            elif b == "nullslast":
                term.nulls = "last"
            else:
                raise bad(f'"failed to parse order ({text})"', f'unexpected "{b}"')
        terms.append(term)
    return terms


def parse_columns(text: str) -> list[str]:
    return [unquote(c.strip()) for c in split_top(text) if c.strip()]


def parse_prefer(headers: list[str]) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for header in headers:
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key:
                prefs[key.strip()] = value.strip()
    return prefs
