"""What to do about a Redis connection error, in words a user can act on.

redis-py reports TLS problems as plain connection errors ("certificate verify
failed", or a reset connection when a ``redis://`` client meets a TLS-only port);
the advice below names the setting that fixes them.
"""

from __future__ import annotations

from diffs.settings import SETTING_NAME

_CERTIFICATE_TROUBLE = (
    "CERTIFICATE_VERIFY_FAILED",
    "certificate verify failed",
    "Hostname mismatch",
)
_DROPPED = ("Connection reset by peer", "Connection closed by server")


def connection_advice(error: BaseException, url: str) -> str | None:
    """A sentence on how to fix ``error`` met while connecting to ``url``, or None."""
    text = str(error)
    if any(marker in text for marker in _CERTIFICATE_TROUBLE):
        return (
            "Redis answered with a TLS certificate this client does not trust: give the "
            f"CA that signed it as {SETTING_NAME}['redis']['ssl_ca_certs'], and connect "
            "by a host name the certificate names."
        )
    if url.startswith("redis://") and any(marker in text for marker in _DROPPED):
        return (
            "The server closed the connection at once: if it only accepts TLS, use a "
            f"rediss:// URL in {SETTING_NAME}['url']."
        )
    return None
