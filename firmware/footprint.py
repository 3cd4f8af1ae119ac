"""arbiterd's process runs without OpenSSL: loading it made 4.5 MiB of the daemon's 40 MiB
resident (issue 18), for nothing the daemon needs.

The daemon speaks no TLS, and every hash it computes (the frames' HMAC-SHA256, the site key
derivation, SNMPv3's authentication) is in CPython's own hash modules, which ``hashlib`` and
``hmac`` use whenever OpenSSL's ``_hashlib`` cannot be imported. What pulled libcrypto and
libssl in was ``hmac`` (through ``_hashlib``: 3.7 MiB with OpenSSL 3's start-up) and ``ssl``
(which PyNUTClient and asyncio import if they can, and use only for TLS the daemon never
asks for). The built-in SHA-256 is no slower here: HMAC-SHA256 of a 60-byte frame, 4.1 us
against OpenSSL's 4.7.

Importing this module is what keeps them out, so firmware.daemon imports it before anything
that could import ``hashlib``, ``hmac``, ``secrets`` or ``ssl``. A process that has loaded
OpenSSL already (a test runner importing firmware.daemon) keeps it as it is: the memory is
spent, and a module it imports later may want ``ssl``.
"""
from __future__ import annotations

import sys

OPENSSL_MODULES = ("_hashlib", "_ssl", "ssl")


def keep_openssl_out() -> None:
    """Marks OpenSSL's modules as absent (what ``import`` then finds is None: ImportError,
    which hashlib, hmac, PyNUTClient and asyncio handle), unless OpenSSL is loaded already."""
    if any(sys.modules.get(name) is not None for name in OPENSSL_MODULES):
        return
    for name in OPENSSL_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # "import ssl" fails


def let_ssl_in() -> None:
    """Lets ``ssl`` be imported again: prometheus_client, behind the HTTP status page, imports
    it whether or not it serves TLS (it does not here). Hashing stays on CPython's modules."""
    for name in ("_ssl", "ssl"):
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]


keep_openssl_out()
