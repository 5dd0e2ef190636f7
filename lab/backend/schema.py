"""The schema cache: tables, columns, keys, foreign keys and functions of the exposed schema.

PostgREST answers from a cache of the catalog; so do we. A miss (unknown table, column or
function) triggers one reload before we answer 404/400, so tables created after start are seen.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg

SCHEMA = "public"


@dataclass
class Column:
    name: str
    type: str  # format_type(), usable in a cast
    nullable: bool
    has_default: bool


@dataclass
class ForeignKey:
    name: str
    table: str
    columns: list[str]
    ref_table: str
    ref_columns: list[str]


@dataclass
class Table:
    name: str
    columns: dict[str, Column] = field(default_factory=dict)
    primary_key: list[str] = field(default_factory=list)
    is_view: bool = False


@dataclass
class Function:
    name: str
    arg_names: list[str]
    arg_types: list[str]
    n_defaults: int
    returns_set: bool
    return_type: str
    return_kind: str  # 'void' | 'scalar' | 'composite'
    volatile: bool

    @property
    def required(self) -> list[str]:
        return self.arg_names[: len(self.arg_names) - self.n_defaults]


_TABLES_SQL = """
SELECT c.relname, c.relkind IN ('v', 'm') AS is_view, a.attname,
       format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, a.atthasdef OR a.attidentity <> ''
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
 ORDER BY c.relname, a.attnum
"""

_KEYS_SQL = """
SELECT con.conname, con.contype, c.relname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i)::text[],
       fc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)::text[]
  FROM pg_constraint con
  JOIN pg_class c ON c.oid = con.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_class fc ON fc.oid = con.confrelid
 WHERE n.nspname = %s AND con.contype IN ('p', 'f')
"""

_FUNCS_SQL = """
SELECT p.proname,
       COALESCE(p.proargnames, '{}'::text[]),
       ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)::text[],
       COALESCE(p.proargmodes::text[], '{}'::text[]),
       p.pronargs, p.pronargdefaults, p.proretset, format_type(p.prorettype, NULL),
       t.typtype, p.provolatile = 'v'
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_type t ON t.oid = p.prorettype
 WHERE n.nspname = %s AND p.prokind = 'f'
"""


class SchemaCache:
    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self.foreign_keys: list[ForeignKey] = []
        self.functions: dict[str, list[Function]] = {}
        self._lock = threading.Lock()
        self._loaded_at = 0.0

    def load(self, conn: psycopg.Connection) -> None:
        tables: dict[str, Table] = {}
        fks: list[ForeignKey] = []
        funcs: dict[str, list[Function]] = {}
        with conn.cursor() as cur:
            for relname, is_view, col, typ, nullable, has_default in cur.execute(_TABLES_SQL, [SCHEMA]):
                table = tables.setdefault(relname, Table(relname, is_view=is_view))
                table.columns[col] = Column(col, typ, nullable, has_default)
            for conname, contype, relname, cols, frel, fcols in cur.execute(_KEYS_SQL, [SCHEMA]):
                if contype == "p" and relname in tables:
                    tables[relname].primary_key = list(cols)
                elif contype == "f" and frel:
                    fks.append(ForeignKey(conname, relname, list(cols), frel, list(fcols)))
            for row in cur.execute(_FUNCS_SQL, [SCHEMA]):
                fn = _function_from_row(row)
                if fn is not None:
                    funcs.setdefault(fn.name, []).append(fn)
        with self._lock:
            self.tables, self.foreign_keys, self.functions = tables, fks, funcs
            self._loaded_at = time.monotonic()

    def reload_if_stale(self, conn: psycopg.Connection, min_age: float = 0.0) -> bool:
        """Reload after a miss (a table or function created after start), at most every `min_age` s."""
        if time.monotonic() - self._loaded_at < min_age:
            return False
        self.load(conn)
        return True


def _function_from_row(row: tuple) -> Function | None:
    name, argnames, argtypes, argmodes, nargs, ndefaults, retset, rettype, typtype, volatile = row
    # Input arguments only: modes i (in), b (inout), v (variadic); OUT and TABLE columns are not inputs.
    in_names: list[str] = []
    if argmodes:
        for i, mode in enumerate(argmodes):
            if mode in ("i", "b", "v"):
                in_names.append(argnames[i] if i < len(argnames) else "")
    else:
        in_names = list(argnames[:nargs]) + [""] * (nargs - len(argnames[:nargs]))
    if rettype == "void":
        kind = "void"
    elif typtype == "c" or rettype == "record":
        kind = "composite"
    else:
        kind = "scalar"
    return Function(name, in_names, list(argtypes), ndefaults, retset, rettype, kind, volatile)
