"""One redaction layer: no secret value reaches a log line, an error message, asset metadata or a notification.

Two things are masked with ``***``:

- every secret value the pipeline resolved (``env:``/``file:`` references register their value here the moment
  they are read, with the parts of it that travel alone: the ``sig`` of a SAS token, the ``AccountKey`` of a
  connection string, the password and query values of a URL);
- well-known secret shapes, whoever produced them: SAS query parameters (``sig=``), ``AccountKey=``,
  ``SharedAccessSignature=``, ``client_secret=``, ``Authorization:`` headers and bearer tokens, the password in a
  URL (``https://user:pass@host``) and token-like URL query parameters (``?token=``, ``&code=``, ``key=``, ...).

Pure Python (no Dagster import): the CLI, the Dagster glue and the clients of external systems all use it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

MASK = "***"
#: Shorter registered values are not masked as plain text: masking every "abc" in every message would make the
#: output unreadable, and a secret that short is guessable anyway. The shapes below still mask them in context.
MIN_SECRET_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern | None = None

#: ``name=value`` pairs that are secrets wherever they appear (connection strings, query strings, log text).
_ALWAYS = (
    r"sig|AccountKey|SharedAccessKey|client_secret|access_token|refresh_token|id_token|password|passwd|"
    r"api[_-]?key|x-api-key|sas_token|account_key"
)
#: Query parameters that are secrets in a URL (``?code=``/``&key=``) but ordinary words elsewhere ("code=403").
_IN_QUERY = r"token|code|key|secret|signature|auth|pwd"
_SHAPES: tuple[tuple[re.Pattern, str], ...] = (
    # A whole SAS inside a connection string runs to the next ';'.
    (re.compile(r"(?i)(SharedAccessSignature\s*=\s*)[^;\s\"'<>]+"), rf"\g<1>{MASK}"),
    (re.compile(rf"(?i)(?<![A-Za-z0-9_])((?:{_ALWAYS})\s*=\s*)[^&;\s\"'<>,)]+"), rf"\g<1>{MASK}"),
    (re.compile(rf"(?i)([?&](?:{_IN_QUERY})=)[^&;\s\"'<>,)#]+"), rf"\g<1>{MASK}"),
    # JSON / YAML / dict style: "client_secret": "value"
    (
        re.compile(rf"(?i)([\"']?(?:{_ALWAYS}|secret|token)[\"']?\s*:\s*[\"'])[^\"']+"),
        rf"\g<1>{MASK}",
    ),
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|sharedkey)\s+)?[^\s\"',]+"),
        rf"\g<1>{MASK}",
    ),
    # Long enough to be a token: "the bearer of" in a message stays readable.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{16,}=*"), rf"\g<1>{MASK}"),
    # user:password@host in any URL; a bare user@ (abfss://container@account) is not a secret and stays.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@"), rf"\g<1>{MASK}@"),
)


def register(secret: str) -> str:
    """Remember a resolved secret so that it, and the parts of it that can appear alone, are masked from now on.

    Returns the secret, so that the code resolving it can register and return in one step.
    """
    if not secret:
        return secret
    found = set(_parts(secret.strip()))
    found = {v for v in found if len(v) >= MIN_SECRET_LENGTH}
    global _pattern
    with _lock:
        if not found <= _secrets:
            _secrets.update(found)
            # Longest first, so a value that contains another is masked whole.
            ordered = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(v) for v in ordered))
    return secret


def _parts(secret: str) -> Iterable[str]:
    """The secret, its URL-encoded forms, and the pieces of a connection string, SAS token or URL."""
    values = {secret}
    if ";" in secret and "=" in secret:  # a connection string: AccountKey=...;SharedAccessSignature=...
        for part in secret.split(";"):
            name, _, value = part.partition("=")
            if name.strip().lower() in {"accountkey", "sharedaccesssignature", "sharedaccesskey", "password"}:
                values.add(value.strip())
    for value in list(values):
        if "sig=" in value:  # a SAS token, alone or inside a connection string
            values.update(v for k, v in parse_qsl(value.lstrip("?"), keep_blank_values=False) if k == "sig")
        if "://" in value:
            url = urlsplit(value)
            if url.password:
                values.add(url.password)
            values.update(v for _, v in parse_qsl(url.query))
            # Webhook URLs often carry the token in the path (/services/T0/B0/XXXX); a short path is no token.
            if len(url.path) >= 16:
                values.add(url.path)
    for value in list(values):
        values.update({quote(value, safe=""), quote_plus(value), unquote(value)})
    # As a JSON string holds it (a provider's error body quoting the key): quotes, backslashes and controls escaped,
    # and "/" written "\/" as PHP's json_encode and others write it.
    for value in list(values):
        escaped = json.dumps(value)[1:-1]
        values.update({escaped, escaped.replace("/", "\\/"), json.dumps(value, ensure_ascii=False)[1:-1]})
    return values


def redact(text: object) -> str:
    """``text`` as a string with every registered secret and every known secret shape replaced by ``***``."""
    result = text if isinstance(text, str) else str(text)
    pattern = _pattern
    if pattern is not None:
        result = pattern.sub(MASK, result)
    for shape, replacement in _SHAPES:
        result = shape.sub(replacement, result)
    return result


def clipped(text: object, limit: int) -> str:
    """``text`` redacted, then cut to ``limit`` characters (``...`` marks a cut): cut first, a secret straddling
    the cut would no longer be whole, and neither a registered value nor a shape would mask the part left."""
    whole = redact(text)
    return whole if len(whole) <= limit else whole[:limit] + "..."


def first_line(text: object, limit: int = 300) -> str:
    """The first line of ``text`` (an exception's message), redacted and cut to ``limit`` (:func:`clipped`); ``""``
    when it has none."""
    lines = str(text).strip().splitlines()
    return clipped(lines[0], limit) if lines else ""


def redact_value(value):
    """A copy of a JSON-like value (dicts, lists, strings) with every string redacted; other scalars unchanged."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrites a log record so that its message and its traceback text are redacted; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: the formatted message replaces ``msg``/``args``; the traceback is pre-rendered."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed format string: logging reports it itself when the record is emitted
        return record
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def install_log_redaction() -> None:
    """Redact every log record this process creates, whichever logger or handler it goes to.

    A filter on the root logger would only see records logged on the root logger itself; the record factory sees
    every record (the pipeline's loggers, Dagster's ``context.log`` and console logger, the Azure SDK's), before
    any handler formats, prints or stores it. Safe to call more than once.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "ci_pipeline_redacting", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        return redact_record(current(*args, **kwargs))

    factory.ci_pipeline_redacting = True
    logging.setLogRecordFactory(factory)
