"""Join tokens in Incus's shape: base64 of a JSON object naming the member to be, the cluster
certificate's fingerprint, the members' addresses, a random secret and the expiry."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from pincus.config.server_keys import parse_address
from pincus.errors import InvalidError

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_SECRET = re.compile(r"^[0-9a-f]{64}$")
MEMBER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def check_member_name(name: object) -> str:
    if not isinstance(name, str) or not MEMBER_NAME.match(name) or name.isdigit():
        raise InvalidError(
            f"Invalid cluster member name {name!r}: letters, digits and inner dashes,"
            " at most 63, not all digits"
        )
    return name


@dataclass(frozen=True)
class JoinToken:
    server_name: str
    fingerprint: str
    addresses: tuple[str, ...]
    secret: str
    expires_at: float  # seconds since the epoch

    def encode(self) -> str:
        doc = {
            "server_name": self.server_name,
            "fingerprint": self.fingerprint,
            "addresses": list(self.addresses),
            "secret": self.secret,
            "expires_at": datetime.fromtimestamp(self.expires_at, UTC).isoformat().replace("+00:00", "Z"),
        }
        return base64.b64encode(json.dumps(doc).encode()).decode()


def decode(text: object) -> JoinToken:
    """The token TEXT carries; InvalidError saying what is wrong with it (nothing is contacted)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidError("Invalid join token: empty")
    try:
        doc = json.loads(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError):
        raise InvalidError("Invalid join token: not base64 of a JSON object (copy it whole)") from None
    if not isinstance(doc, dict):
        raise InvalidError("Invalid join token: not a JSON object")
    name = check_member_name(doc.get("server_name"))
    fingerprint, secret = doc.get("fingerprint"), doc.get("secret")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise InvalidError("Invalid join token: bad certificate fingerprint")
    if not isinstance(secret, str) or not _SECRET.match(secret):
        raise InvalidError("Invalid join token: bad secret")
    addresses = doc.get("addresses")
    if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) for a in addresses):
        raise InvalidError("Invalid join token: no member addresses")
    for a in addresses:
        try:
            parse_address(a)
        except ValueError as e:
            raise InvalidError(f"Invalid join token: member address {e}") from None
    try:
        expires = datetime.fromisoformat(str(doc.get("expires_at")).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidError("Invalid join token: bad expiry time") from None
    if expires.tzinfo is None:
        raise InvalidError("Invalid join token: expiry time without a time zone")
    return JoinToken(name, fingerprint, tuple(addresses), secret, expires.timestamp())
