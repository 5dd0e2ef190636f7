"""iDRAC credentials for a server (CONTRACT.md section 5): lookup order and local decryption.

Encrypted columns hold base64 of pgcrypto `encrypt(data, key, 'aes')`: AES-CBC with a 16-byte zero
IV and PKCS#7 padding; the key is base64-decode(activity_settings.encryption_key) (32 bytes:
AES-256; pgcrypto zero-pads shorter keys to 16/24/32 bytes, and so do we).

Lookup, first match wins:
  1. the server's credential_set_id
  2. the server's own idrac_username + idrac_password_encrypted
  3. the server's discovered_by_credential_set_id
  4. the lowest-priority credential_ip_ranges entry whose range holds the server's address
Only credential sets of credential_type idrac (or NULL) count; an esxi set is skipped with a warning.
  5. the executor's configured default (IDRAC_USER / IDRAC_PASSWORD)
A decrypt failure stops the lookup with a clear error (no silent fall-through to a weaker match).
Passwords are registered for log redaction the moment they are decrypted and never logged.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from lib.errors import AuthError, ConfigError
from lib.executor.models import Credentials, Server
from lib.logs import register_secret

log = logging.getLogger(__name__)

ZERO_IV = bytes(16)


class DecryptError(ConfigError):
    default_hint = (
        "The stored password cannot be decrypted with activity_settings.encryption_key: re-enter the "
        "password in DSM (it is re-encrypted with the current key)."
    )


def decode_key(encryption_key: str | None) -> bytes:
    """activity_settings.encryption_key (base64) -> AES key bytes, zero-padded as pgcrypto does."""
    if not encryption_key:
        raise ConfigError(
            "activity_settings.encryption_key is not set",
            hint="Set the encryption key in DSM's activity settings (base64 of 32 random bytes).",
        )
    try:
        key = base64.b64decode(encryption_key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            "activity_settings.encryption_key is not valid base64",
            hint="It must be the base64 of 32 random bytes.",
        ) from exc
    if not key or len(key) > 32:
        raise ConfigError(f"activity_settings.encryption_key decodes to {len(key)} bytes; AES needs 1..32")
    size = 16 if len(key) <= 16 else 24 if len(key) <= 24 else 32
    return key.ljust(size, b"\0")


def decrypt_password(encrypted: str, key: bytes, *, what: str = "password") -> str:
    """Decrypt one column value. Raises DecryptError naming `what` (never the value)."""
    try:
        data = base64.b64decode(encrypted, validate=True)
        if not data or len(data) % 16:
            raise ValueError("length is not a multiple of the AES block")
        decryptor = Cipher(algorithms.AES(key), modes.CBC(ZERO_IV)).decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plain = (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise DecryptError(f"cannot decrypt the {what}: wrong encryption key or corrupt value") from exc
    register_secret(plain)
    return plain


def encrypt_password(plain: str, key: bytes) -> str:
    """The inverse (tests, lab seeding): base64 of AES-CBC zero IV PKCS#7, as pgcrypto does."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(ZERO_IV)).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def host_of(address: str) -> str:
    """'10.0.0.5', '10.0.0.5:8443', '[fe80::1]:443' -> the bare address."""
    a = address.strip()
    if a.startswith("["):
        return a[1:].split("]", 1)[0]
    if a.count(":") == 1:
        return a.split(":", 1)[0]
    return a


def ip_in_range(address: str, ip_range: str) -> bool:
    """True when address is in a CIDR, an 'a-b' range or equals one IP. Bad input is no match."""
    try:
        ip = ipaddress.ip_address(host_of(address))
        r = ip_range.strip()
        if "/" in r:
            return ip in ipaddress.ip_network(r, strict=False)
        if "-" in r:
            lo, hi = (ipaddress.ip_address(p.strip()) for p in r.split("-", 1))
            return lo <= ip <= hi
        return ip == ipaddress.ip_address(r)
    except ValueError:
        return False


class CredentialResolver:
    """Resolves and decrypts credentials through a PostgREST client; caches sets and the key."""

    def __init__(
        self,
        rest: Any,
        *,
        default_user: str | None = None,
        default_password: str | None = None,
        key_loader: Callable[[], str | None] | None = None,
    ) -> None:
        self.rest = rest
        self.default_user = default_user
        self.default_password = default_password
        self._key_loader = key_loader
        self._key: bytes | None = None

    def _aes_key(self) -> bytes:
        if self._key is None:
            if self._key_loader is not None:
                raw = self._key_loader()
            else:
                rows = self.rest.select("activity_settings", columns="encryption_key", limit=1)
                raw = rows[0].get("encryption_key") if rows else None
            self._key = decode_key(raw)
        return self._key

    def _set(self, set_id: str) -> Mapping[str, Any] | None:
        rows = self.rest.select(
            "credential_sets",
            {"id": f"eq.{set_id}"},
            columns="id,name,username,password_encrypted,credential_type",
        )
        return rows[0] if rows else None

    def _from_set(self, set_id: str, why: str, server: Server) -> Credentials | None:
        row = self._set(set_id)
        if row is None:
            log.warning("server %s: %s %s does not exist; trying the next source", server.label, why, set_id)
            return None
        kind = row.get("credential_type")
        if kind not in (None, "idrac"):  # an ESXi set never logs in to an iDRAC (NULL counts as idrac)
            log.warning(
                "server %s: %s %r is a %s credential set, not idrac; trying the next source",
                server.label,
                why,
                row.get("name"),
                kind,
            )
            return None
        if not row.get("password_encrypted"):
            raise AuthError(
                f"credential set {row.get('name')!r} ({why} of server {server.label}) has no password",
                hint="Set a password on that credential set in DSM.",
            )
        pw = decrypt_password(
            row["password_encrypted"], self._aes_key(), what=f"password of credential set {row.get('name')!r}"
        )
        return Credentials(row["username"], pw, f"credential_set:{row.get('name')}")

    def for_server(self, server: Server) -> Credentials:
        if server.credential_set_id:
            creds = self._from_set(server.credential_set_id, "credential_set_id", server)
            if creds:
                return creds
        if server.idrac_username and server.idrac_password_encrypted:
            pw = decrypt_password(
                server.idrac_password_encrypted,
                self._aes_key(),
                what=f"iDRAC password of server {server.label}",
            )
            return Credentials(server.idrac_username, pw, "server")
        if server.discovered_by_credential_set_id:
            creds = self._from_set(
                server.discovered_by_credential_set_id, "discovered_by_credential_set_id", server
            )
            if creds:
                return creds
        ranges = self.rest.select(
            "credential_ip_ranges", columns="credential_set_id,ip_range,priority", order="priority.asc"
        )
        for r in ranges:
            if ip_in_range(server.ip_address, str(r.get("ip_range") or "")):
                creds = self._from_set(str(r["credential_set_id"]), f"ip range {r.get('ip_range')}", server)
                if creds:
                    return creds
        if self.default_user and self.default_password:
            return Credentials(self.default_user, self.default_password, "executor default")
        raise AuthError(
            f"no iDRAC credentials for server {server.label}",
            hint=(
                "Assign a credential set to the server in DSM, add a credential IP range that covers its "
                "address, or set IDRAC_USER and IDRAC_PASSWORD for this executor."
            ),
        )
