"""PostgREST at /rest/v1: a parsed request becomes ONE SQL statement per read or write.

Every request runs in one transaction under the request's role (set by the server), so grants
decide access and a filtered PATCH is a single `UPDATE ... WHERE ... RETURNING` with PostgreSQL's
own row locking. Rows are rendered to JSON by PostgreSQL (json_agg), as PostgREST does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .errors import ApiError, pgrst
from .pgquery import (
    RESERVED_PARAMS,
    ColRef,
    Cond,
    Logic,
    OrderTerm,
    SelectItem,
    bad,
    parse_columns,
    parse_condition,
    parse_in_list,
    parse_logic,
    parse_order,
    parse_prefer,
    parse_select,
)
from .schema import SCHEMA, ForeignKey, Function, SchemaCache, Table

OBJECT_MEDIA = "application/vnd.pgrst.object+json"
JSON_CT = "application/json; charset=utf-8"


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str  # after /rest/v1, e.g. "/jobs" or "/rpc/fn"
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    prefer: dict[str, str]
    body: bytes

    @classmethod
    def build(
        cls, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes
    ):
        prefer = parse_prefer([headers.get("prefer", "")])
        return cls(method, path, query, headers, prefer, body)

    @property
    def singular(self) -> bool:
        return OBJECT_MEDIA in self.headers.get("accept", "")

    def param(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qt(table: str) -> str:
    return f"{q(SCHEMA)}.{q(table)}"


def lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Builder:
    """Collects SQL parameters and hands out table aliases for one statement."""

    def __init__(self, cache: SchemaCache) -> None:
        self.cache = cache
        self.params: list[Any] = []
        self._n = 0

    def alias(self) -> str:
        self._n += 1
        return f"t{self._n}"

    def p(self, value: Any) -> str:
        self.params.append(value)
        return "%s"


# ----------------------------------------------------------------------------------------------
# Column expressions, filters, order
# ----------------------------------------------------------------------------------------------


def col_sql(alias: str, col: ColRef, table: Table | None = None, *, for_select: bool = False) -> str:
    expr = f"{alias}.{q(col.name)}"
    for arrow, key in col.path:
        expr += f"{arrow}{key}" if key.lstrip("-").isdigit() else f"{arrow}{lit(key)}"
    if col.cast:
        expr = f"({expr})::{col.cast}"
    return expr


def cond_sql(b: Builder, alias: str, table: Table, c: Cond) -> str:
    expr = col_sql(alias, c.col, table)
    op = c.op
    if op == "is":
        val = c.value.lower()
        mapping = {"null": "IS NULL", "not_null": "IS NOT NULL", "true": "IS TRUE", "false": "IS FALSE"}
        if val == "unknown":
            sql = f"{expr} IS UNKNOWN"
        elif val in mapping:
            sql = f"{expr} {mapping[val]}"
        else:
            raise bad(f'"failed to parse filter (is.{c.value})"', 'unexpected "' + c.value[:1] + '"')
    elif op == "in":
        values = parse_in_list(c.value)
        sql = f"{expr} IN ({', '.join(b.p(v) for v in values)})" if values else "false"
    elif op in ("like", "ilike"):
        sql = f"{expr} {'LIKE' if op == 'like' else 'ILIKE'} {b.p(c.value.replace('*', '%'))}"
    elif op in ("fts", "plfts", "phfts", "wfts"):
        fn = {"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery"}.get(
            op, "websearch_to_tsquery"
        )
        lang = f"{lit(c.modifier)}::regconfig, " if c.modifier else ""
        sql = f"{expr} @@ {fn}({lang}{b.p(c.value)})"
    else:
        from .pgquery import OPERATORS

        sql = f"{expr} {OPERATORS[op]} {b.p(c.value)}"
    return f"NOT ({sql})" if c.negate else sql


def logic_sql(b: Builder, alias: str, table: Table, node: Logic) -> str:
    parts = []
    for item in node.items:
        if isinstance(item, Logic):
            parts.append(logic_sql(b, alias, table, item))
        else:
            parts.append(cond_sql(b, alias, table, item))
    joined = f" {node.op.upper()} ".join(f"({p})" for p in parts) or ("true" if node.op == "and" else "false")
    return f"NOT ({joined})" if node.negate else f"({joined})"


def order_sql(alias: str, table: Table, terms: list[OrderTerm]) -> str:
    out = []
    for t in terms:
        s = col_sql(alias, t.col, table) + (" DESC" if t.desc else " ASC")
        if t.nulls:
            s += f" NULLS {t.nulls.upper()}"
        out.append(s)
    return ", ".join(out)


# ----------------------------------------------------------------------------------------------
# Query levels: the top table and each embedded resource carry their own filters/order/limit
# ----------------------------------------------------------------------------------------------


@dataclass
class Level:
    table: Table
    select: list[SelectItem]
    conds: list[Cond | Logic] = field(default_factory=list)
    order: list[OrderTerm] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    children: dict[str, Level] = field(default_factory=dict)  # by embed alias/name


def _int_param(name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise bad(f'"failed to parse {name} parameter ({value})"') from None
    if n < 0:
        raise bad(f'"failed to parse {name} parameter ({value})"')
    return n


def get_table(cache: SchemaCache, conn: psycopg.Connection, name: str) -> Table:
    table = cache.tables.get(name)
    if table is None and cache.reload_if_stale(conn):
        table = cache.tables.get(name)
    if table is None:
        raise pgrst(
            404,
            "PGRST205",
            f"Could not find the table '{SCHEMA}.{name}' in the schema cache",
            hint=None,
        )
    return table


def build_level(
    cache: SchemaCache, conn, table: Table, req: Request, *, skip: set[str] | None = None
) -> Level:
    """Parse select + filters + order + limit for the top level and embedded levels."""
    top = Level(table, parse_select(req.param("select")))
    _attach_children(cache, conn, top)
    skip = skip or set()
    for key, value in req.query:
        if key in RESERVED_PARAMS or key in skip:
            continue
        level, key = _level_for(top, key)
        if key in ("or", "and", "not.or", "not.and"):
            level.conds.append(parse_logic(key, value))
        elif key == "order":
            level.order = parse_order(value)
        elif key == "limit":
            level.limit = _int_param("limit", value)
        elif key == "offset":
            level.offset = _int_param("offset", value)
        else:
            level.conds.append(parse_condition(key, value))
    if req.param("order"):
        top.order = parse_order(req.param("order") or "")
    if req.param("limit") is not None:
        top.limit = _int_param("limit", req.param("limit") or "")
    if req.param("offset") is not None:
        top.offset = _int_param("offset", req.param("offset") or "")
    return top


def _level_for(top: Level, key: str) -> tuple[Level, str]:
    level = top
    while "." in key:
        head, _, rest = key.partition(".")
        if head in level.children:
            level, key = level.children[head], rest
            continue
        if head == "not":
            break
        if head in ("or", "and", "order", "limit", "offset"):
            break
        # A dotted key naming no embedded resource: PostgREST's PGRST108.
        if rest.split(".")[0] in ("or", "and", "order", "limit", "offset") or head not in level.table.columns:
            raise pgrst(
                400,
                "PGRST108",
                f"'{head}' is not an embedded resource in this request",
                hint=f"Verify that '{head}' is included in the 'select' query parameter.",
            )
        break
    return level, key


def _attach_children(cache: SchemaCache, conn, level: Level) -> None:
    for item in level.select:
        if item.kind != "embed":
            continue
        target, _fk, _kind = resolve_embed(cache, level.table, item)
        child = Level(target, item.children)
        _attach_children(cache, conn, child)
        level.children[item.alias or item.rel] = child


def resolve_embed(cache: SchemaCache, parent: Table, item: SelectItem) -> tuple[Table, ForeignKey, str]:
    rel, hint = item.rel, item.hint
    cands: list[tuple[ForeignKey, str]] = []
    for fk in cache.foreign_keys:
        # many-to-one: parent holds the FK; rel names the referenced table or the FK column/constraint
        if fk.table == parent.name and (
            fk.ref_table == rel or fk.name == rel or (len(fk.columns) == 1 and fk.columns[0] == rel)
        ):
            cands.append((fk, "m2o"))
        # one-to-many: rel holds an FK to the parent
        if fk.ref_table == parent.name and fk.table == rel:
            cands.append((fk, "o2m"))
    if hint:
        cands = [(fk, k) for fk, k in cands if hint in (fk.name, *fk.columns, fk.table, fk.ref_table)]
    if not cands:
        raise pgrst(
            400,
            "PGRST200",
            f"Could not find a relationship between '{parent.name}' and '{rel}' in the schema cache",
            f"Searched for a foreign key relationship between '{parent.name}' and '{rel}' in the schema "
            f"'{SCHEMA}', but no matches were found.",
            "Perhaps you meant a different table or a foreign key hint.",
        )
    if len(cands) > 1:
        details = [
            {
                "cardinality": "many-to-one" if k == "m2o" else "one-to-many",
                "embedding": f"{parent.name} with {rel}",
                "relationship": f"{fk.name} using {fk.table}({', '.join(fk.columns)}) and "
                f"{fk.ref_table}({', '.join(fk.ref_columns)})",
            }
            for fk, k in cands
        ]
        err = pgrst(
            300,
            "PGRST201",
            f"Could not embed because more than one relationship was found for '{parent.name}' and '{rel}'",
            None,
            f"Try changing '{rel}' to one of the following: "
            + ", ".join(f"'{rel}!{fk.name}'" for fk, _ in cands)
            + ". Find the desired relationship in the 'details' key.",
        )
        err.details = details  # type: ignore[assignment]  # PostgREST sends a list here
        raise err
    fk, kind = cands[0]
    target_name = fk.ref_table if kind == "m2o" else fk.table
    return cache.tables[target_name], fk, kind


def select_sql(b: Builder, alias: str, level: Level) -> str:
    parts: list[str] = []
    for item in level.select:
        if item.kind == "star":
            parts.append(f"{alias}.*")
        elif item.kind == "col":
            assert item.col is not None
            parts.append(
                f"{col_sql(alias, item.col, level.table)} AS {q(item.alias or item.col.default_alias)}"
            )
        else:
            name = item.alias or item.rel
            parts.append(f"({embed_sql(b, alias, level, item)}) AS {q(name)}")
    return ", ".join(parts) or f"{alias}.*"


def _join_cond(alias: str, child_alias: str, fk: ForeignKey, kind: str) -> str:
    if kind == "m2o":  # parent.fkcols = child.refcols
        pairs = zip(fk.columns, fk.ref_columns, strict=True)
        return " AND ".join(f"{child_alias}.{q(r)} = {alias}.{q(c)}" for c, r in pairs)
    pairs = zip(fk.columns, fk.ref_columns, strict=True)
    return " AND ".join(f"{child_alias}.{q(c)} = {alias}.{q(r)}" for c, r in pairs)


def embed_sql(b: Builder, alias: str, level: Level, item: SelectItem) -> str:
    child = level.children[item.alias or item.rel]
    _target, fk, kind = resolve_embed(b.cache, level.table, item)
    ca = b.alias()
    where = [_join_cond(alias, ca, fk, kind)] + [_cond_any(b, ca, child.table, c) for c in child.conds]
    inner = (
        f"SELECT {select_sql(b, ca, child)} FROM {qt(child.table.name)} AS {ca} WHERE {' AND '.join(where)}"
    )
    if kind == "m2o":
        return f"SELECT row_to_json(_e) FROM ({inner} LIMIT 1) _e"
    if child.order:
        inner += f" ORDER BY {order_sql(ca, child.table, child.order)}"
    if child.limit is not None:
        inner += f" LIMIT {child.limit}"
    if child.offset:
        inner += f" OFFSET {child.offset}"
    return f"SELECT COALESCE(json_agg(_e), '[]'::json) FROM ({inner}) _e"


def _cond_any(b: Builder, alias: str, table: Table, c: Cond | Logic) -> str:
    return logic_sql(b, alias, table, c) if isinstance(c, Logic) else cond_sql(b, alias, table, c)


def where_sql(b: Builder, alias: str, level: Level) -> list[str]:
    where = [_cond_any(b, alias, level.table, c) for c in level.conds]
    # !inner embeds filter the parent: only rows with a matching embedded row remain.
    for item in level.select:
        if item.kind == "embed" and item.inner:
            child = level.children[item.alias or item.rel]
            _t, fk, kind = resolve_embed(b.cache, level.table, item)
            ca = b.alias()
            conds = [_join_cond(alias, ca, fk, kind)] + [
                _cond_any(b, ca, child.table, c) for c in child.conds
            ]
            where.append(f"EXISTS (SELECT 1 FROM {qt(child.table.name)} AS {ca} WHERE {' AND '.join(conds)})")
    return where


# ----------------------------------------------------------------------------------------------
# Handlers
# ----------------------------------------------------------------------------------------------


def _range(req: Request) -> tuple[int | None, int | None]:
    """Range: 0-9 (items) -> (offset, limit)."""
    header = req.headers.get("range")
    if not header:
        return None, None
    spec = header.split("=", 1)[-1].strip()
    lo, _, hi = spec.partition("-")
    try:
        offset = int(lo)
        limit = int(hi) - offset + 1 if hi else None
    except ValueError:
        return None, None
    if limit is not None and limit < 0:
        raise pgrst(
            416,
            "PGRST103",
            "Requested range not satisfiable",
            "The lower boundary must be lower than or equal to the upper boundary in the Range header.",
        )
    return offset, limit


def _content_range(offset: int, n: int, total: int | None) -> str:
    total_s = "*" if total is None else str(total)
    if n == 0:
        return f"*/{total_s}"
    return f"{offset}-{offset + n - 1}/{total_s}"


def _singular(req: Request, n: int, body_text: str) -> str:
    if n != 1:
        raise pgrst(
            406,
            "PGRST116",
            "JSON object requested, multiple (or no) rows returned",
            f"The result contains {n} rows",
        )
    return body_text.strip()[1:-1].strip()


def _json_response(req: Request, status: int, body_text: str | None, headers: dict[str, str]) -> Response:
    if body_text is None:
        return Response(status, b"", headers)
    headers = dict(headers)
    headers["Content-Type"] = (OBJECT_MEDIA + "; charset=utf-8") if req.singular else JSON_CT
    return Response(status, body_text.encode(), headers)


def handle_read(conn: psycopg.Connection, cache: SchemaCache, req: Request) -> Response:
    table = get_table(cache, conn, req.path.strip("/"))
    top = q(table.name)  # aliased by its own name, so PostgreSQL's messages read "jobs.col" as PostgREST's
    level = build_level(cache, conn, table, req)
    r_off, r_lim = _range(req)
    offset = level.offset if level.offset is not None else (r_off or 0)
    limit = level.limit
    if r_lim is not None:
        limit = r_lim if limit is None else min(limit, r_lim)
    b = Builder(cache)
    sel = select_sql(b, top, level)
    where = where_sql(b, top, level)
    sql = f"SELECT {sel} FROM {qt(table.name)} AS {top}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if level.order:
        sql += " ORDER BY " + order_sql(top, table, level.order)
    if limit is not None:
        sql += f" LIMIT {limit}"
    if offset:
        sql += f" OFFSET {offset}"
    full = f"SELECT count(*), COALESCE(json_agg(_r), '[]'::json)::text FROM ({sql}) _r"
    with conn.cursor() as cur:
        n, body = cur.execute(full, b.params).fetchone()  # type: ignore[misc]
        total = None
        if req.prefer.get("count") in ("exact", "planned", "estimated"):
            cb = Builder(cache)
            cwhere = where_sql(cb, top, level)
            csql = f"SELECT count(*) FROM {qt(table.name)} AS {top}" + (
                " WHERE " + " AND ".join(cwhere) if cwhere else ""
            )
            total = cur.execute(csql, cb.params).fetchone()[0]  # type: ignore[index]
    status = 200
    if total is not None:
        if offset > total and not (offset == 0):
            raise pgrst(
                416,
                "PGRST103",
                "Requested range not satisfiable",
                f"An offset of {offset} was requested, but there are only {total} rows.",
            )
        if n < total:
            status = 206
    headers = {"Content-Range": _content_range(offset, n, total)}
    if req.prefer.get("count"):
        headers["Preference-Applied"] = f"count={req.prefer['count']}"
    if req.singular:
        body = _singular(req, n, body)
    if req.method == "HEAD":
        return Response(status, b"", {**headers, "Content-Type": JSON_CT})
    return _json_response(req, status, body, headers)


def _parse_body(req: Request) -> Any:
    if not req.body.strip():
        raise pgrst(400, "PGRST102", "Empty or invalid json")
    try:
        return json.loads(req.body)
    except ValueError:
        raise pgrst(400, "PGRST102", "Empty or invalid json") from None


def _check_columns(table: Table, cols: list[str], cache: SchemaCache, conn) -> None:
    missing = [c for c in cols if c not in table.columns]
    if missing and cache.reload_if_stale(conn):
        table = cache.tables.get(table.name, table)
        missing = [c for c in cols if c not in table.columns]
    if missing:
        raise pgrst(
            400,
            "PGRST204",
            f"Could not find the '{missing[0]}' column of '{table.name}' in the schema cache",
        )


def _mutation_result(
    conn, cache: SchemaCache, req: Request, table: Table, level: Level, mutation: str, params: list[Any]
) -> tuple[int, str | None]:
    ret = req.prefer.get("return", "minimal")
    top = q(table.name)
    b = Builder(cache)
    b.params = list(params)
    if ret == "representation":
        sel = select_sql(b, top, level)
        tail = f"SELECT count(*), COALESCE(json_agg(_r), '[]'::json)::text FROM (SELECT {sel} FROM pgrst_source AS {top}) _r"
    else:
        pk = table.primary_key
        loc = (
            f"(SELECT row_to_json(_r)::text FROM (SELECT {', '.join(q(c) for c in pk)} FROM pgrst_source LIMIT 1) _r)"
            if pk
            else "NULL"
        )
        tail = f"SELECT count(*), {loc} FROM pgrst_source"
    sql = f"WITH pgrst_source AS ({mutation}) {tail}"
    with conn.cursor() as cur:
        n, text = cur.execute(sql, b.params).fetchone()  # type: ignore[misc]
    return n, text


def _write_response(
    req: Request, table: Table, status_body: int, n: int, text: str | None, *, insert: bool
) -> Response:
    ret = req.prefer.get("return", "minimal")
    applied = []
    for key in ("return", "count", "resolution", "missing"):
        if key in req.prefer:
            applied.append(f"{key}={req.prefer[key]}")
    headers: dict[str, str] = {}
    if applied:
        headers["Preference-Applied"] = ", ".join(applied)
    total = n if req.prefer.get("count") == "exact" else None
    headers["Content-Range"] = (
        _content_range(0, n, total) if not insert else f"*/{'*' if total is None else total}"
    )
    if req.singular and ret == "representation":
        text = _singular(req, n, text or "[]")
    elif req.singular:
        _singular(req, n, "[]" if n != 1 else "[{}]")
    if ret == "representation":
        return _json_response(req, status_body, text, headers)
    if (insert and text and ret == "headers-only") or (insert and text and ret == "minimal"):
        pk = json.loads(text)
        headers["Location"] = f"/{table.name}?" + "&".join(f"{k}=eq.{v}" for k, v in pk.items())
    return Response(201 if insert else 204, b"", headers)


def handle_insert(conn, cache: SchemaCache, req: Request) -> Response:
    table = get_table(cache, conn, req.path.strip("/"))
    top = q(table.name)  # aliased by its own name, so PostgreSQL's messages read "jobs.col" as PostgREST's
    payload = _parse_body(req)
    rows = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(r, dict) for r in rows):
        raise pgrst(400, "PGRST102", "All object keys must match")
    columns_param = req.param("columns")
    if columns_param:
        cols = parse_columns(columns_param)
    else:
        cols = list(rows[0].keys()) if rows else []
        if any(set(r.keys()) != set(cols) for r in rows):
            raise pgrst(400, "PGRST102", "All object keys must match")
    _check_columns(table, cols, cache, conn)
    level = build_level(cache, conn, table, req)
    qcols = ", ".join(q(c) for c in cols)
    params: list[Any] = []
    if not cols:
        source = "DEFAULT VALUES" if len(rows) <= 1 else None
        if source is None:
            raise pgrst(400, "PGRST102", "All object keys must match")
        mutation = f"INSERT INTO {qt(table.name)} AS {top} DEFAULT VALUES"
    elif req.prefer.get("missing") == "default":
        # Each missing key gets the column DEFAULT; present keys go through json_populate_record
        # so PostgreSQL converts JSON to the column type (enums, uuid[], jsonb ...).
        values = []
        for r in rows:
            cells = []
            for c in cols:
                if c in r:
                    params.append(json.dumps(r))
                    cells.append(f"(json_populate_record(NULL::{qt(table.name)}, %s::json)).{q(c)}")
                else:
                    cells.append("DEFAULT")
            values.append("(" + ", ".join(cells) + ")")
        mutation = f"INSERT INTO {qt(table.name)} AS {top} ({qcols}) VALUES {', '.join(values)}"
    else:
        params.append(json.dumps(rows))
        mutation = (
            f"INSERT INTO {qt(table.name)} AS {top} ({qcols}) SELECT {qcols} "
            f"FROM json_populate_recordset(NULL::{qt(table.name)}, %s::json) _j"
        )
    resolution = req.prefer.get("resolution")
    if resolution in ("merge-duplicates", "ignore-duplicates"):
        conflict = parse_columns(req.param("on_conflict") or "") or table.primary_key
        if not conflict:
            raise pgrst(400, "PGRST100", "on_conflict is required for a table without a primary key")
        target = ", ".join(q(c) for c in conflict)
        if resolution == "ignore-duplicates" or not cols:
            mutation += f" ON CONFLICT ({target}) DO NOTHING"
        else:
            sets = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in cols)
            mutation += f" ON CONFLICT ({target}) DO UPDATE SET {sets}"
    mutation += f" RETURNING {top}.*"
    n, text = _mutation_result(conn, cache, req, table, level, mutation, params)
    return _write_response(req, table, 201, n, text, insert=True)


def _require_filters(req: Request, verb: str) -> None:
    # Supabase loads pg-safeupdate: an UPDATE or DELETE without WHERE is refused.
    if not any(k not in RESERVED_PARAMS for k, _ in req.query):
        raise pgrst(400, "21000", f"{verb} requires a WHERE clause")


def handle_update(conn, cache: SchemaCache, req: Request) -> Response:
    table = get_table(cache, conn, req.path.strip("/"))
    top = q(table.name)  # aliased by its own name, so PostgreSQL's messages read "jobs.col" as PostgREST's
    payload = _parse_body(req)
    if not isinstance(payload, dict):
        raise pgrst(400, "PGRST102", "Empty or invalid json")
    _require_filters(req, "UPDATE")
    cols = list(payload.keys())
    _check_columns(table, cols, cache, conn)
    level = build_level(cache, conn, table, req)
    if not cols:
        # Nothing to set: PostgREST answers without touching the table.
        return _write_response(req, table, 200, 0, "[]", insert=False)
    b = Builder(cache)
    b.p(json.dumps(payload))
    qcols = ", ".join(q(c) for c in cols)
    where = where_sql(b, top, level)
    mutation = (
        f"UPDATE {qt(table.name)} AS {top} SET ({qcols}) = "
        f"(SELECT {qcols} FROM json_populate_record(NULL::{qt(table.name)}, %s::json))"
    )
    if where:
        mutation += " WHERE " + " AND ".join(where)
    mutation += f" RETURNING {top}.*"
    n, text = _mutation_result(conn, cache, req, table, level, mutation, b.params)
    return _write_response(req, table, 200, n, text, insert=False)


def handle_delete(conn, cache: SchemaCache, req: Request) -> Response:
    table = get_table(cache, conn, req.path.strip("/"))
    top = q(table.name)  # aliased by its own name, so PostgreSQL's messages read "jobs.col" as PostgREST's
    _require_filters(req, "DELETE")
    level = build_level(cache, conn, table, req)
    b = Builder(cache)
    where = where_sql(b, top, level)
    mutation = f"DELETE FROM {qt(table.name)} AS {top}"
    if where:
        mutation += " WHERE " + " AND ".join(where)
    mutation += f" RETURNING {top}.*"
    n, text = _mutation_result(conn, cache, req, table, level, mutation, b.params)
    return _write_response(req, table, 200, n, text, insert=False)


# ----------------------------------------------------------------------------------------------
# RPC
# ----------------------------------------------------------------------------------------------


def _find_function(cache: SchemaCache, conn, name: str, keys: set[str]) -> Function:
    fns = cache.functions.get(name)
    if fns is None and cache.reload_if_stale(conn):
        fns = cache.functions.get(name)
    for fn in fns or []:
        if keys <= set(fn.arg_names) and set(fn.required) <= keys:
            return fn
    sig = ", ".join(sorted(keys))
    raise pgrst(
        404,
        "PGRST202",
        f"Could not find the function {SCHEMA}.{name}({sig}) in the schema cache",
        f"Searched for the function {SCHEMA}.{name} with parameter"
        + ("s " + sig if keys else "s or with a single unnamed json/jsonb parameter")
        + ", but no matches were found in the schema cache.",
        "If a new function was created in the database with this name and parameters, "
        "try reloading the schema cache.",
    )


def _arg_value(value: Any, typ: str) -> Any:
    if value is None:
        return None
    if typ in ("json", "jsonb"):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and typ.endswith("[]"):
        return "{" + ",".join(_array_elem(v) for v in value) + "}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _array_elem(v: Any) -> str:
    if v is None:
        return "NULL"
    text = (
        json.dumps(v)
        if isinstance(v, (dict, list))
        else ("true" if v is True else "false" if v is False else str(v))
    )
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def handle_rpc(conn, cache: SchemaCache, req: Request, name: str) -> Response:
    if req.method == "POST":
        args = _parse_body(req) if req.body.strip() else {}
        if not isinstance(args, dict):
            raise pgrst(400, "PGRST102", "Empty or invalid json")
        fn = _find_function(cache, conn, name, set(args))
        filter_skip: set[str] = set()
    else:
        names = {k for k, _ in req.query if k not in RESERVED_PARAMS}
        if name not in cache.functions:
            cache.reload_if_stale(conn)
        fns = cache.functions.get(name) or []
        arg_names = set().union(*(set(f.arg_names) for f in fns)) if fns else set()
        args = {k: v for k, v in req.query if k in arg_names}
        fn = _find_function(cache, conn, name, set(args) & names)
        filter_skip = set(args)
        if fn.volatile:
            # PostgREST runs GET in a READ ONLY transaction: a volatile function that writes fails.
            conn.execute("SET TRANSACTION READ ONLY")
    b = Builder(cache)
    call_args = []
    for arg, typ in zip(fn.arg_names, fn.arg_types, strict=False):
        if arg in args:
            call_args.append(f"{q(arg)} := {b.p(_arg_value(args[arg], typ))}::{typ}")
    call = f"{qt(fn.name)}({', '.join(call_args)})"
    with conn.cursor() as cur:
        if fn.return_kind == "void":
            cur.execute(f"SELECT {call}", b.params)
            return Response(204, b"", {})
        if fn.return_kind == "scalar" and not fn.returns_set:
            row = cur.execute(f"SELECT to_json({call})::text", b.params).fetchone()
            return _json_response(req, 200, row[0] if row and row[0] is not None else "null", {})
        if fn.return_kind == "scalar":
            row = cur.execute(
                f"SELECT COALESCE(json_agg(_v), '[]'::json)::text, count(*) FROM {call} AS _v", b.params
            ).fetchone()
            return _json_response(req, 200, row[0], {})  # type: ignore[index]
        # composite / TABLE / SETOF composite: filters, select and order apply to the result rows
        fake = Table(fn.name)
        level = Level(fake, parse_select(req.param("select")))
        for key, value in req.query:
            if key in RESERVED_PARAMS or key in filter_skip:
                continue
            if key in ("or", "and", "not.or", "not.and"):
                level.conds.append(parse_logic(key, value))
            else:
                level.conds.append(parse_condition(key, value))
        sql = f"SELECT {select_sql(b, 't0', level)} FROM {call} AS t0"
        where = [_cond_any(b, "t0", fake, c) for c in level.conds]
        if where:
            sql += " WHERE " + " AND ".join(where)
        if req.param("order"):
            sql += " ORDER BY " + order_sql("t0", fake, parse_order(req.param("order") or ""))
        if req.param("limit"):
            sql += f" LIMIT {_int_param('limit', req.param('limit') or '')}"
        if req.param("offset"):
            sql += f" OFFSET {_int_param('offset', req.param('offset') or '')}"
        n, text = cur.execute(
            f"SELECT count(*), COALESCE(json_agg(_r), '[]'::json)::text FROM ({sql}) _r", b.params
        ).fetchone()  # type: ignore[misc]
    if not fn.returns_set:
        # A function returning one composite answers a single object (null when it returned NULL).
        rows = json.loads(text)
        body = json.dumps(rows[0]) if rows else "null"
        if rows and all(v is None for v in rows[0].values()):
            body = "null"
        return _json_response(req, 200, body, {})
    if req.singular:
        text = _singular(req, n, text)
    return _json_response(req, 200, text, {"Content-Range": _content_range(0, n, None)})


def dispatch(conn: psycopg.Connection, cache: SchemaCache, req: Request) -> Response:
    path = req.path
    if path.startswith("/rpc/"):
        if req.method not in ("GET", "POST", "HEAD"):
            raise pgrst(405, "PGRST101", "Cannot use the " + req.method + " method on RPC")
        return handle_rpc(conn, cache, req, path[len("/rpc/") :])
    if path.strip("/") == "":
        raise ApiError(404, None, "Not found")
    method = req.method
    if method in ("GET", "HEAD"):
        return handle_read(conn, cache, req)
    if method == "POST":
        return handle_insert(conn, cache, req)
    if method == "PATCH":
        return handle_update(conn, cache, req)
    if method == "DELETE":
        return handle_delete(conn, cache, req)
    raise pgrst(405, "PGRST117", f"Unsupported HTTP method: {method}")
