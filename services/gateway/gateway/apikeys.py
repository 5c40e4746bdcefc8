"""Optional API keys: the keys file read at start-up, and the check of a request's key.

Keys are held only as SHA-256 digests and a presented key is compared with every one of them
by `hmac.compare_digest` (no early exit, and equal-length digests, so neither the time taken
nor the position of a match says anything about the keys). A key never reaches a log line, an
error message or a metric label.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway import errors
from gateway.settings import Settings, SettingsError, env_name

# Visible ASCII without spaces: what an HTTP header carries unchanged. 16 characters at least,
# so a key cannot be guessed in the number of tries a public endpoint sees.
KEY_FORMAT = re.compile(r"[\x21-\x7e]{16,4096}")
HOW_TO_SEND = "send it as 'Authorization: Bearer <key>' (or 'X-API-Key: <key>')"


class Headers(Protocol):
    """A request's headers (werkzeug's, or a dict in tests)."""

    def get(self, key: str, default: str) -> str: ...


@dataclass(frozen=True)
class ApiKeys:
    """The keys the gateway accepts, as digests; `check` refuses a request without one."""

    digests: tuple[bytes, ...]

    @classmethod
    def from_file(cls, path: str) -> ApiKeys:
        """Read one key per line (blank lines and # comments ignored); SettingsError if unusable."""
        variable = f"{env_name('api_keys_file')}={path}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SettingsError(f"{variable}: cannot read the keys file: {reason}") from None
        digests: list[bytes] = []
        for number, line in enumerate(text.splitlines(), start=1):
            key = line.strip()
            if not key or key.startswith("#"):
                continue
            if not KEY_FORMAT.fullmatch(key):
                # the line number only: the message must not show (part of) a secret
                raise SettingsError(
                    f"{variable}: line {number}: a key is 16 to 4096 visible ASCII characters "
                    f"without spaces"
                )
            digests.append(_digest(key))
        if not digests:
            raise SettingsError(
                f"{variable}: the file holds no key (one per line; blank lines and # comments "
                f"are ignored); unset the variable to run without keys"
            )
        return cls(tuple(digests))

    def check(self, headers: Headers) -> None:
        """Pass if the request carries a known key; else ApiKeyRequired or ApiKeyInvalid."""
        presented = presented_key(headers)
        if presented is None:
            raise errors.ApiKeyRequired(f"this gateway needs an API key: {HOW_TO_SEND}")
        digest = _digest(presented)
        matched = False
        for known in self.digests:  # every key, whatever matched before
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise errors.ApiKeyInvalid("the API key is not valid for this gateway")


def load_api_keys(settings: Settings) -> ApiKeys | None:
    """The configured keys, or None when GATEWAY_API_KEYS_FILE is unset (no keys needed)."""
    return ApiKeys.from_file(settings.api_keys_file) if settings.api_keys_file else None


def presented_key(headers: Headers) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>`, else `X-API-Key`; None if none."""
    scheme, _, credentials = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    api_key = headers.get("X-API-Key", "").strip()
    return api_key or None


def _digest(key: str) -> bytes:
    # WSGI gives header values as latin-1 strings: this maps them back to the bytes sent
    return hashlib.sha256(key.encode("latin-1", errors="replace")).digest()
