"""Logging setup (text or JSON lines on stderr, UTC) and redaction of secrets by value.

Secrets are registered once (lib.config does it for every secret it reads) and replaced with
``***`` in every record: the message, its arguments and the text of a logged exception.
Header values of Authorization, X-Auth-Token, X-API-Token and apikey are scrubbed by pattern too,
so a token we never registered (one a server handed us) does not leak either.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import TextIO

MASK = "***"
_MIN_SECRET_LEN = 3  # shorter values would mask ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

_HEADER_RE = re.compile(
    r"(?i)(\b(?:authorization|x-auth-token|x-api-token|apikey|x-executor-signature)\b"
    r"[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic)\s+)?[^\s\"',}]+"
)
_URL_CREDENTIALS_RE = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(@)")


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked in every log record from now on."""
    global _pattern
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def redact(text: str) -> str:
    """Mask registered secrets, auth header values and passwords inside URLs."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _HEADER_RE.sub(lambda m: m.group(1) + MASK, text)
    return _URL_CREDENTIALS_RE.sub(lambda m: m.group(1) + MASK + m.group(2), text)


class RedactingFilter(logging.Filter):
    """Renders the record's message once, redacts it, and redacts the exception text too."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        )


_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for journald and log shippers. Extra fields are kept."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, object] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value if isinstance(value, int | float | bool | None) else redact(str(value))
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def setup_logging(*, level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once for a program run; calling it again replaces the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else UTCFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_dsm_handler", False):
            root.removeHandler(old)
    handler._dsm_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # urllib3 and pyvmomi chatter at INFO would drown the operator's lines.
    for noisy in ("urllib3", "pyVmomi"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
