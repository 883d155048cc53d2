"""Secrets out of every error text the project stores (metrics.json, run.log, W&B).

An OpenAI-compatible server may echo the API key in its error ("Incorrect API key provided:
sk-..."); a base URL may carry a password (``https://user:pw@host``); a proxy may quote the
``Authorization: Bearer ...`` header.  Error and traceback text goes through :func:`redact`
before it is written, and :func:`install` puts a filter on the log handlers so every logged
line and traceback (run.log, the console W&B captures) is scrubbed as well.

What counts as a secret: the values of ``OPENAI_API_KEY`` and of the variable the config names
in ``generation.openai.api_key_env`` (values shorter than :data:`MIN_SECRET` are left alone:
they would mask ordinary words), bearer tokens, URL passwords and ``sk-`` style keys.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Iterable

MASK = "***"
MIN_SECRET = 6
DEFAULT_ENVS = ("OPENAI_API_KEY",)

_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]+")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s:@'\"]*):([^@\s/'\"]+)@")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")

_envs: set[str] = set(DEFAULT_ENVS)


def register_secret_env(*names: str | None) -> None:
    """Treat the values of these environment variables as secrets from now on."""
    _envs.update(n for n in names if n)


def secret_values(extra: Iterable[str] = ()) -> list[str]:
    """The secret strings to mask, longest first (so a key containing another is masked whole)."""
    vals = {os.environ.get(n) or "" for n in _envs} | set(extra)
    return sorted((v for v in vals if len(v) >= MIN_SECRET), key=len, reverse=True)


def redact(text: str | None, extra: Iterable[str] = ()) -> str | None:
    """``text`` with every known secret replaced by :data:`MASK`."""
    if not text:
        return text
    for v in secret_values(extra):
        text = text.replace(v, MASK)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", text)
    return _SK_KEY.sub(MASK, text)


def strip_url_credentials(url: str) -> str:
    """``url`` without ``user:password@`` (for identities and names that are stored)."""
    return re.sub(r"(?i)^([a-z][a-z0-9+.\-]*://)[^/@]*@", r"\1", url)


class RedactingFilter(logging.Filter):
    """A handler filter: the record's message and traceback text, scrubbed, before formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg, record.args = redact(record.getMessage()), None
        except Exception:  # a malformed record: let logging report it as usual
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(cfg=None) -> None:
    """Register the config's API-key variable and filter every handler of the root logger
    (Hydra's console and run.log handlers exist by the time a job starts).  Idempotent."""
    if cfg is not None:
        from omegaconf import OmegaConf

        register_secret_env(OmegaConf.select(cfg, "generation.openai.api_key_env", default=None,
                                             throw_on_resolution_failure=False))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
