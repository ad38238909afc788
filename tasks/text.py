"""How drillbook writes durations, ages, times and TXIDs, and what it hides: one rule each.

A leaf: everything may import it; it imports nothing of drillbook.

    duration_text(62)           '1m 02s'      (3.2s, 42s, 4m 05s, 36h 00m, 4d 01h)
    iso(moment)                 '2026-11-20T10:00:00.000Z'
    txid_text(255)              '00000000000000ff'
    one_line(text)              markup and line breaks out, bounded
    redact(text) / redact_url   credentials in URLs, Slack tokens, e-mail addresses masked
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DAYS_FROM = 2 * 86400  # from two days on, an age reads in days and hours


def duration_text(seconds: float | None) -> str:
    """3.2s, 42s, 4m 05s, 36h 00m, then 4d 01h from two days on; '-' when unknown; negative spans keep their sign."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + duration_text(-seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    whole = int(round(seconds))
    if whole >= DAYS_FROM:
        days, rest = divmod(whole, 86400)
        return f"{days}d {rest // 3600:02d}h"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def iso(moment: datetime | None) -> str:
    """UTC, milliseconds, 'Z': the form litestream's -timestamp takes; '-' when unknown."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def txid_text(value: int | None) -> str | None:
    """A TXID as litestream lists it: 16 lowercase hex digits."""
    return None if value is None else f"{value:016x}"


_MARKUP = re.compile(r"<[^>]*>|<\S*")  # whole tags, and a tag cut off by someone's truncation ("</bo...")


def one_line(text: str, limit: int = 300) -> str:
    """Text for a one-line reason: markup (an HTML error page) and line breaks out, at most `limit` characters."""
    flat = " ".join(_MARKUP.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def slug(text: str, limit: int = 80) -> str:
    """Lowercase letters, digits and '-': safe in a file name, an artifact key or a limit name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "default"


MASK = "REDACTED"
SECRET_MASK = "[secret redacted]"
EMAIL_MASK = "[email redacted]"
_SECRET_PARAM = re.compile(r"key|secret|token|password|passwd|credential|signature|^sig$|^x-amz-", re.IGNORECASE)
# scheme://user:password@host: the credentials run to the LAST '@' before the path, so a password holding
# '@', ':', '#', '%' or '/' (unencoded) is masked whole, never half-printed.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<creds>\S*@)(?=[^\s@/])")
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])(?!REDACTED@)[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")  # not a URL's masked user
_TOKENISH = re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+|\bxapp-[A-Za-z0-9-]+|(hooks\.slack\.com/services/)[A-Za-z0-9/]+")


def redact_url(url: str) -> str:
    """A URL with its user and password, and any credential-looking query value, replaced."""
    parts = urlsplit(url)
    query = [(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe=":/"), parts.fragment))


def redact(text: str, *secrets: str | None) -> str:
    """`text` with URL credentials, Slack tokens, webhook paths, e-mail addresses and the given secrets masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, SECRET_MASK)
    text = _URL_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _TOKENISH.sub(lambda m: (m.group(1) or "") + SECRET_MASK, text)
    return _EMAIL.sub(EMAIL_MASK, text)


def redact_data(value: Any, *secrets: str | None) -> Any:
    """`redact` applied to every string in a JSON-like structure."""
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, dict):
        return {redact(str(k), *secrets): redact_data(v, *secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v, *secrets) for v in value]
    return value


def file_part(text: str) -> str:
    """A name kept as it is where it is safe in a file name or key (letters, digits, '_', '.', '-'), the rest as '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
