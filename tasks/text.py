"""How drillbook writes durations, ages, times and TXIDs, and what it hides: one rule each.

A leaf: everything may import it; it imports nothing of drillbook.

    duration_text(62)           '1m 02s'      (3.2s, 42s, 4m 05s, 36h 00m, 4d 01h)
    iso(moment)                 '2026-11-20T10:00:00.000Z'
    txid_text(255)              '00000000000000ff'
    one_line(text)              markup and line breaks out, control characters shown, bounded
    visible(text)               control characters, escape sequences, bidi controls shown ('\\x1b'), not sent
    check_label(value, field)   a name or release whole: one printable line, bounded (ValueError naming the field)
    redact(text) / redact_url   credentials in URLs, Slack tokens, e-mail addresses, remembered secrets masked
    remember_secret(value)      a configured secret masked from then on, whole, encoded, decoded and in pieces
    url_credentials_problem     a URL whose password parsers would read differently: the reason, never the secret
    slug(text) / file_part      safe in a file name, an artifact key, a Slack file name
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

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
    """Text for a one-line reason: markup (an HTML error page) and line breaks out, at most `limit` characters.

    Control characters that are not whitespace (an escape sequence, a bidi override) are shown, not kept.
    """
    flat = visible(" ".join(_MARKUP.sub(" ", text[: limit * 20]).split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# What must never reach a terminal, a chat message or a one-line report as itself: C0 and C1 control
# characters (ESC starts a terminal escape sequence, CR rewrites the line), DEL, zero-width characters,
# line and paragraph separators, and the bidi embeddings, overrides and isolates that reorder what is read.
_UNSHOWABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_UNSHOWABLE_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, lines: bool = False) -> str:
    """`text` with control characters, escape sequences, bidi controls and line separators written out ('\\x1b',
    '\\u202e'), so a terminal or a reader sees them instead of obeying them; with `lines`, tab and newline stay."""
    return (_UNSHOWABLE_BUT_LINES if lines else _UNSHOWABLE).sub(_shown, text)


LABEL_LIMIT = 200


def check_label(value: str, field: str, limit: int = LABEL_LIMIT) -> str:
    """`value` when it is one line of at most `limit` printable characters, else ValueError naming `field`.

    For names and identifiers that come from outside (a release from CI or an event, a tag, a suite name):
    they end up in file names, reports and terminals, so they are checked whole, and a huge one is refused
    without being echoed.
    """
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text (got {type(value).__name__})")
    if len(value) > limit:
        raise ValueError(f"{field} is {len(value):,} characters long; at most {limit} are allowed")
    if not value.strip():
        raise ValueError(f"{field} is empty")
    bad = _UNSHOWABLE.search(value)
    if bad:
        raise ValueError(f"{field} holds a control character or line break ({_shown(bad)} at position {bad.start()}): {visible(value)!r}")
    return value


def slug(text: str, limit: int = 80) -> str:
    """Lowercase letters, digits and '-': safe in a file name, an artifact key or a limit name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "default"


MASK = "REDACTED"
SECRET_MASK = "[secret redacted]"
EMAIL_MASK = "[email redacted]"
_SECRET_PARAM = re.compile(r"key|secret|token|password|passwd|credential|signature|^sig$|^x-amz-", re.IGNORECASE)
# scheme://user:password@host: the credentials run to the LAST '@' before the path, so a password holding
# '@', ':', '#', '%' or '/' (unencoded) is masked whole, never half-printed.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<creds>[^\s/]\S*@)(?=[^\s@/])")  # 'file:///a@b': a path
# A password someone wrote unencoded with a space in it ("postgresql://user:p ss@host"): from the user's ':' to the
# '@' before the host on the same line, but not a host's port ("http://host:8080/ ... a@b.com").
_URL_SPACED_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<creds>[\w.~%+-]+:(?!\d+(?![A-Za-z0-9_%]))[^@\s<>\"'|]*(?: [^@\s<>\"'|]+){1,3}@)(?=[^\s@/])"
)
# "user:secret" after a scheme and no '@' at all (a URL cut short, or its host lost): the whole token is masked.
_URL_UNFINISHED_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<creds>[^\s/@:\[]+:(?!\d+(?![A-Za-z0-9_%]))[^\s@]+)(?=\s|$)"
)
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])(?!REDACTED@)[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")  # not a URL's masked user
_TOKENISH = re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+|\bxapp-[A-Za-z0-9-]+|(hooks\.slack\.com/services/)[A-Za-z0-9/]+")


def _url_credentials(text: str) -> str:
    text = _URL_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _URL_SPACED_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", text)
    return _URL_UNFINISHED_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK, text)


def redact_url(url: str) -> str:
    """A URL with its user and password, and any credential-looking query value, replaced.

    The credentials are cut on the text first (up to the last '@' before the host), so a password holding '@',
    ':', '/', '#' or '%' is masked whole: `urlsplit` alone would read part of it as the path or the fragment.
    """
    url = _url_credentials(url)
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe=":/"), parts.fragment))


# Secrets the catalogue configured (a history URL's password, a replica URL's key, a token's value): every output
# that goes through `redact` masks them, whole, in their URL-encoded and decoded forms, and each piece of them
# between URL delimiters that a parser could cut off and show (the part after an unencoded '@' read as the host).
_REMEMBERED: set[str] = set()
_REMEMBERED_SORTED: list[str] = []
_SECRET_CUTS = re.compile(r"[@:/#?&=+\s%;,]")
SECRET_PIECE = 6  # pieces this long and longer are masked on their own; shorter ones say nothing of the secret
_SECRET_WHOLE = 4  # a whole secret shorter than this is not masked (it would mask ordinary words)


def remember_secret(value: str | None) -> None:
    """Mask `value` in everything `redact` sees from now on (this process), in every form a URL parser could print."""
    if not value or len(value) < _SECRET_WHOLE:
        return
    forms = {value, unquote(value), unquote_plus(value), quote(value, safe=""), quote_plus(value)}
    for form in list(forms):
        forms.update(piece for piece in _SECRET_CUTS.split(form) if len(piece) >= SECRET_PIECE)
    new = {form for form in forms if len(form) >= _SECRET_WHOLE} - _REMEMBERED
    if new:
        _REMEMBERED.update(new)
        _REMEMBERED_SORTED[:] = sorted(_REMEMBERED, key=len, reverse=True)  # longest first: a piece never splits a whole


def remembered_secrets() -> list[str]:
    """Every form of every remembered secret, longest first (for a logging filter or a test)."""
    return list(_REMEMBERED_SORTED)


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: its userinfo password and any credential-looking query value."""
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if v and _SECRET_PARAM.search(k)]
    return [unquote(value) for value in found] + found


_URL_START = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PERCENT_BAD = re.compile(r"%(?![0-9A-Fa-f]{2})")
ENCODE_HINT = "URL-encode the password (@ as %40, : as %3A, / as %2F, # as %23, ? as %3F, % as %25, space as %20)"


def url_credentials_problem(url: str) -> str | None:
    """Why this URL's credentials can be read more than one way, without a character of the secret; None when they cannot.

    An unencoded '@' in a password: one parser takes the password to the last '@' (urlsplit), another to the first
    (SQLAlchemy, then the rest as the host, printed in its error). A '/', '?' or '#' ends the host part early, a
    space or a stray '%' is no URL at all. Each would show part of the password somewhere: refused, not guessed.
    """
    start = _URL_START.match(url)
    if not start:
        return None
    rest = url[start.end() :]
    first_at = rest.find("@")
    if first_at < 0:
        return None
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    authority_end = min(ends) if ends else len(rest)
    if first_at > authority_end:  # the '@' is in the path or query, unless a password's '/', '?' or '#' cut the host part
        head = rest[:authority_end]
        if ":" in head and not head.rpartition(":")[2].isdigit():  # 'user:pa/ss@host' (a 'host:port' is no password)
            return f"the password holds '/', '?' or '#' unencoded, so the URL's host cannot be told from it: {ENCODE_HINT}"
        return None
    authority = rest[:authority_end]
    userinfo = authority[: authority.rfind("@")]
    if authority.count("@") > 1:
        return f"the password holds '@' unencoded, so parsers disagree on where the host starts: {ENCODE_HINT}"
    if re.search(r"\s", userinfo):
        return f"the password holds a space or line break: {ENCODE_HINT}"
    if _PERCENT_BAD.search(userinfo):
        return f"the password holds a '%' that is not a %XX escape: {ENCODE_HINT}"
    return None


def redact(text: str, *secrets: str | None, emails: bool = True) -> str:
    """`text` with URL credentials, Slack tokens, webhook paths, the given secrets and (with `emails`) e-mail addresses masked.

    `emails=False` for what stays with the operator (the evidence bundle, the terminal): credentials go, people's addresses
    a check reported stay.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, SECRET_MASK)
    for secret in _REMEMBERED_SORTED:
        if secret in text:
            text = text.replace(secret, SECRET_MASK)
    text = _url_credentials(text)
    text = _TOKENISH.sub(lambda m: (m.group(1) or "") + SECRET_MASK, text)
    return _EMAIL.sub(EMAIL_MASK, text) if emails else text


def redact_data(value: Any, *secrets: str | None, emails: bool = True) -> Any:
    """`redact` applied to every string in a JSON-like structure."""
    if isinstance(value, str):
        return redact(value, *secrets, emails=emails)
    if isinstance(value, dict):
        return {redact(str(k), *secrets, emails=emails): redact_data(v, *secrets, emails=emails) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, *secrets, emails=emails) for v in value]
    return value


def file_part(text: str, limit: int = 120) -> str:
    """A name kept as it is where it is safe in a file name or key (letters, digits, '_', '.', '-'), the rest as '-'.

    Never a path: no '/', no NUL, no leading '.' (so never '..' or a hidden file), never empty, at most `limit` characters.
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:limit].lstrip(".") or "-"


def key_stamp(moment: datetime | None) -> str:
    """A time as it goes into an outbox key or a file name: 20261202T010203Z; 'never' when there is none."""
    return moment.strftime("%Y%m%dT%H%M%SZ") if moment else "never"
