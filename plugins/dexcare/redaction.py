"""Credentials out of every text that leaves the transport or the storage layer: one rule, used everywhere.

Airflow masks the secrets it knows (connection passwords, variables), and only once they were registered in the
process that logs. A proxy URL from the environment, a username-only proxy token (``http://TOKEN@proxy``), or a
library's exception text that quotes the URL it was given (aiohttp's ``ClientHttpProxyError`` does) is none of
those, and such a text can end in a log line, an exception, a TriggerEvent stored in the metadata database or an
XCom. So every such text passes through :func:`redact` before it leaves, and a URL meant for display through
:func:`redact_url`. The whole user-info part of a web or proxy URL goes (user names are often tokens), and of
any URL that carries a password; the id of an Airflow connection before a storage bucket stays. The host, the
port (an IPv6 address keeps its brackets) and the path stay, so the message still says where.
"""

from __future__ import annotations

import re
import urllib.parse

#: What replaces the user-info of a URL (``user:password``, ``user`` or ``:password``).
MASK = "***"

#: ``scheme://userinfo@``: the user-info runs up to the last ``@`` before the host, and cannot hold ``/``,
#: white space or quotes (RFC 3986 allows none of them unescaped there).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s@'\"<>]*)@")

#: Schemes whose user-info is a credential even without a password: a proxy or web URL's user name is often
#: a token (``http://TOKEN@proxy``). Elsewhere (``s3://aws_default@bucket``) a user name alone is the id of an
#: Airflow connection, which says where a file is and is no secret; a password there is masked all the same.
_WEB_SCHEMES = frozenset({"http", "https", "ws", "wss", "socks4", "socks4a", "socks5", "socks5h"})


def _mask(match: re.Match[str]) -> str:
    scheme = match["scheme"]
    if ":" not in match["userinfo"] and scheme[:-3].lower() not in _WEB_SCHEMES:
        return match[0]
    return f"{scheme}{MASK}@"


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it masked; a text without one comes back unchanged."""
    if "@" not in text:
        return text
    return _USERINFO.sub(_mask, text)


def redact_url(url: str | None) -> str | None:
    """One URL for display: its credentials masked as :func:`redact` does, the host kept as written (IPv6
    brackets included)."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc or redact(url) == url:
        return redact(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))

