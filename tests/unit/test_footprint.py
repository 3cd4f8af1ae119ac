"""arbiterd runs without OpenSSL (firmware.footprint): neither libcrypto nor libssl is mapped
into its process, its HMACs are the same bytes as OpenSSL's, and the status page, whose
prometheus_client imports ssl, still loads when configured. Each case runs in a fresh
interpreter, as the daemon's process starts: this one has OpenSSL loaded already."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from firmware.protocol import Frame, Kind, decode, derive_key, encode

MASTER = b"0123456789abcdef0123456789abcdef"


def _fresh(program: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(program)], capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout)


def _mapped(names: tuple[str, ...]) -> str:
    return f"sorted({{l.split('/')[-1].strip() for l in open('/proc/self/maps') if any(n in l for n in {names!r})}})"


FRAME = Frame(Kind.POLL, "arbiter", "db1", 7, 42, {"nonce": 12345})


def test_the_daemon_process_maps_no_openssl_and_signs_as_openssl_does():
    got = _fresh(f"""
        import json, sys
        import firmware.daemon
        import firmware.snmp  # the traps' engine and its asyncio loop, as a site with managers has them
        from firmware.protocol import Frame, Kind, derive_key, encode
        key = derive_key({MASTER!r}, "db1")
        print(json.dumps({{"mapped": {_mapped(("libcrypto", "libssl"))},
                          "openssl": [n for n in ("_hashlib", "_ssl", "ssl") if sys.modules.get(n) is not None],
                          "key": key.decode(), "frame": encode(Frame(Kind({FRAME.kind.value}), {FRAME.sender!r}, {FRAME.receiver!r}, {FRAME.boot_id},
                                                {FRAME.seq}, {FRAME.payload!r}), key).hex()}}))
    """)
    assert got["mapped"] == [] and got["openssl"] == [], got
    assert "_hashlib" in sys.modules  # this process signs with OpenSSL
    key = derive_key(MASTER, "db1")
    assert got["key"] == key.decode()
    assert bytes.fromhex(got["frame"]) == encode(FRAME, key)
    assert decode(bytes.fromhex(got["frame"]), key).payload == {"nonce": 12345}


def test_the_status_page_still_loads_when_configured():
    got = _fresh("""
        import json, sys
        import firmware.daemon
        from firmware import footprint
        footprint.let_ssl_in()  # what Daemon._web does before its imports
        import firmware.web
        print(json.dumps({"ssl": sys.modules["ssl"] is not None, "hashlib_openssl": sys.modules.get("_hashlib") is not None}))
    """)
    assert got == {"ssl": True, "hashlib_openssl": False}


def test_a_process_with_openssl_loaded_keeps_it():
    got = _fresh("""
        import json, ssl, sys
        import firmware.daemon
        import urllib.request  # imports ssl again: still there
        print(json.dumps({"ssl": sys.modules["ssl"] is ssl, "hashlib_openssl": sys.modules.get("_hashlib") is not None}))
    """)
    assert got == {"ssl": True, "hashlib_openssl": True}
