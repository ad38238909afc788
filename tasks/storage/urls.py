"""Replica URLs as messages may show them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query values that are secrets in some backend's URL form (a SAS token's signature, a key).
_SECRET_QUERY = {"sig", "key", "secret", "password", "token", "sas"}


def redact(url: str) -> str:
    """The URL with a userinfo password and secret query values replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = urlencode(
        [(k, "***" if k.lower() in _SECRET_QUERY else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe=":/"
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
