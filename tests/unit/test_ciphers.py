"""arbiterd leaves out pysnmp's ciphers (the cryptography package, about 6 MiB) when no SNMPv3
is configured, and loads them at start-up when it is. Each case runs in a fresh interpreter:
the decision is made once per process, in arbiterd's main."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import sys
    from firmware.config import Alerts, Config, Site, SnmpAgent, SnmpManager, Vip
    from firmware.daemon import leave_out_unused_ciphers
    managers = [SnmpManager(host="127.0.0.1", port=1162, version={version!r}, user="u", auth_key_file="/a",
                            priv_key_file="/p")]
    snmp = SnmpAgent(address={address!r}, user={user!r}, auth_key_file="/a", priv_key_file="/p")
    cfg = Config(site=Site(name="s", key_file="/k"), servers=(), vip=Vip(address="192.0.2.10/24"),
                 alerts=Alerts(managers=managers), snmp=snmp)
    leave_out_unused_ciphers(cfg)
    import firmware.snmp, firmware.snmp_agent  # what arbiterd imports for traps and the responder
    from pysnmp.proto.secmod.rfc3826.priv import aes
    print(sys.modules.get("cryptography") is not None, aes.PysnmpCryptoError)
""")


@pytest.mark.parametrize(("version", "address", "user", "loaded"), [
    ("v2c", "", "", False),  # v2c traps only: nothing to encrypt
    ("v2c", "127.0.0.1", "", False),  # and a v2c-only responder
    ("v3", "", "", True),  # v3 (authPriv) traps or informs
    ("v2c", "127.0.0.1", "reader", True),  # a v3 user on the responder
])
def test_ciphers_load_at_start_exactly_when_snmpv3_is_configured(version, address, user, loaded):
    out = subprocess.run([sys.executable, "-c", PROGRAM.format(version=version, address=address, user=user)],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out == [str(loaded), str(not loaded)], out
