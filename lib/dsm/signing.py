"""The executor HMAC signature of CONTRACT.md section 6.

The backend recomputes the signature over JavaScript's JSON.stringify of the parsed body with
keys sorted, so our canonical form must follow JavaScript's rules, not Python's json defaults:
raw non-ASCII characters and integral floats written as integers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping
from decimal import Decimal

MAX_AGE_SECONDS = 300
MAX_FUTURE_SECONDS = 30
SIGNATURE_HEADER = "x-executor-signature"
TIMESTAMP_HEADER = "x-executor-timestamp"


def _js_number(value: float) -> str:
    """ECMAScript Number::toString: the shortest round-trip digits, laid out as JavaScript does."""
    if math.isnan(value) or math.isinf(value):
        return "null"  # JSON.stringify(NaN) === "null"
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, as JavaScript's algorithm does.
    parts = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, parts.digits))
    n = len(digits) + int(parts.exponent)  # value = 0.<digits> * 10**n
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exponent = n - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def _utf16_key(key: str) -> bytes:
    # Array.prototype.sort compares UTF-16 code units, not code points.
    return key.encode("utf-16-be", "surrogatepass")


def canonical_json(obj: object) -> str:
    """JSON.stringify of `obj` with object keys sorted recursively, no whitespace."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return _js_number(obj)
    if isinstance(obj, str):
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, Mapping):
        items = sorted(((str(k), v) for k, v in obj.items()), key=lambda kv: _utf16_key(kv[0]))
        return (
            "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{canonical_json(v)}" for k, v in items) + "}"
        )
    if isinstance(obj, list | tuple):
        return "[" + ",".join(canonical_json(v) for v in obj) + "]"
    raise TypeError(f"cannot sign a value of type {type(obj).__name__}")


def signature(body: object, secret: str, timestamp: int) -> str:
    message = canonical_json(body) + str(timestamp)
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def sign(body: object, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The two headers that authenticate `body` as coming from an executor."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {SIGNATURE_HEADER: signature(body, secret, ts), TIMESTAMP_HEADER: str(ts)}


def verify(
    body: object, secret: str, sig: str | None, timestamp: str | int | None, *, now: float | None = None
) -> bool:
    """True when the signature matches and the timestamp is inside the accepted window."""
    if not sig or timestamp is None:
        return False
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if ts < current - MAX_AGE_SECONDS or ts > current + MAX_FUTURE_SECONDS:
        return False
    return hmac.compare_digest(signature(body, secret, ts), sig.lower())
