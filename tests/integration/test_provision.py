"""arbiter-provision into a boot folder: the operator's way in (Raspberry Pi OS custom.toml,
a NetworkManager connection for a static address), the UPS and SNMP secrets with their
paths checked against where first boot puts them, and a boot folder that must exist."""
from __future__ import annotations

import configparser
import tomllib
from pathlib import Path

import pytest

from host_tools.provision import PI_FIRSTBOOT
from host_tools.provision import main as provision
from tests.integration.test_image import site_files

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO2b7zY2CkXoUq1c3a0sF3n0hW9kq3b1g5n8m7p6r4s2 tech@laptop"


@pytest.fixture
def boot(tmp_path):
    """A fresh Raspberry Pi OS boot partition: its cmdline.txt still runs Pi OS's firstboot."""
    folder = tmp_path / "bootfs"
    folder.mkdir()
    (folder / "cmdline.txt").write_text(f"console=serial0,115200 root=PARTUUID=1234abcd-02 rootwait {PI_FIRSTBOOT}\n")
    return folder


def with_ups_and_snmp(conf: Path, ups_file: str = "/etc/arbiter/ups.password") -> None:
    conf.write_text(conf.read_text().replace("[timing]", f'[ups]\nusername = "monuser"\npassword_file = "{ups_file}"\n'
                                             '[timing]', 1)
                    + '[[alerts.managers]]\nhost = "192.0.2.50"\nversion = "v3"\nuser = "ops"\n'
                      'auth_key_file = "/etc/arbiter/snmp/auth"\npriv_key_file = "/etc/arbiter/snmp/priv"\n')


def secrets(tmp: Path) -> list[str]:
    for name, value in (("ups.pw", "nut-secret-pw"), ("auth", "v3-auth-passphrase"), ("priv", "v3-priv-passphrase")):
        (tmp / name).write_text(value)
    return ["--ups-password", str(tmp / "ups.pw"), "--snmp-secret", f"auth={tmp / 'auth'}",
            "--snmp-secret", f"priv={tmp / 'priv'}"]


def test_a_rack_gets_hostname_operator_key_static_address_and_every_secret(tmp_path, boot, capsys):
    conf, key_file, _ = site_files(tmp_path)
    with_ups_and_snmp(conf)
    (tmp_path / "id.pub").write_text(PUBKEY + "\n")
    assert provision(["--config", str(conf), "--key-file", str(key_file), *secrets(tmp_path), "--hostname", "arb-rack1",
                      "--operator", "ops", "--ssh-key", str(tmp_path / "id.pub"), "--address", "192.0.2.20/24",
                      "--gateway", "192.0.2.1", "--dns", "192.0.2.53", "--boot-dir", str(boot)]) == 0
    out = capsys.readouterr()
    assert "nut-secret" not in out.out + out.err and "passphrase" not in out.out + out.err
    custom = tomllib.loads((boot / "custom.toml").read_text())
    assert custom["config_version"] == 1 and custom["system"] == {"hostname": "arb-rack1"}
    assert custom["user"] == {"name": "ops"}  # no password: Pi OS locks it, the key is the way in
    assert custom["ssh"] == {"enabled": True, "password_authentication": False, "authorized_keys": [PUBKEY]}
    nm = configparser.ConfigParser(interpolation=None)
    nm.read_string((boot / "arbiter/network.nmconnection").read_text())
    assert nm["ipv4"]["method"] == "manual" and nm["ipv4"]["address1"] == "192.0.2.20/24,192.0.2.1"
    assert nm["ipv4"]["dns"] == "192.0.2.53;" and nm["connection"]["interface-name"] == "eth0"
    assert (boot / "arbiter/ups.password").read_text() == "nut-secret-pw"
    assert (boot / "arbiter/snmp/priv").read_text() == "v3-priv-passphrase"
    for f in [*boot.rglob("*")]:
        if f.is_file() and f.name != "cmdline.txt":
            assert f.stat().st_mode & 0o777 == 0o600, f


def test_dhcp_ships_no_connection(tmp_path, boot):
    conf, key_file, _ = site_files(tmp_path)
    assert provision(["--config", str(conf), "--key-file", str(key_file), "--dhcp", "--boot-dir", str(boot)]) == 0
    assert not (boot / "arbiter/network.nmconnection").exists()


def test_a_mistyped_boot_dir_is_refused_not_created(tmp_path, capsys):
    conf, key_file, _ = site_files(tmp_path)
    missing = tmp_path / "bootfs-typo"
    assert provision(["--config", str(conf), "--key-file", str(key_file), "--boot-dir", str(missing)]) == 1
    assert "no such folder" in capsys.readouterr().err and not missing.exists()


@pytest.mark.parametrize("ups_file,options,message", [
    ("/etc/nut/upsmon.pw", True, "ups.password_file = '/etc/nut/upsmon.pw': first boot installs secrets in "
                                 "/etc/arbiter/ only"),
    ("/etc/arbiter/ups.password", False, "ups.password_file = '/etc/arbiter/ups.password': this card does not "
                                         "carry it; ship it with --ups-password"),
])
def test_secret_paths_are_checked_against_where_first_boot_puts_them(tmp_path, boot, capsys, ups_file, options,
                                                                     message):
    conf, key_file, _ = site_files(tmp_path)
    with_ups_and_snmp(conf, ups_file)
    extra = secrets(tmp_path) if options else secrets(tmp_path)[2:]
    assert provision(["--config", str(conf), "--key-file", str(key_file), *extra, "--boot-dir", str(boot)]) == 2
    err = capsys.readouterr().err
    assert message in err and "nothing written" in err and not (boot / "arbiter").exists()


def test_the_site_key_must_be_where_first_boot_puts_it(tmp_path, boot, capsys):
    conf, key_file, _ = site_files(tmp_path)
    conf.write_text(conf.read_text().replace('key_file = "/etc/arbiter/site.key"', 'key_file = "/root/site.key"'))
    assert provision(["--config", str(conf), "--key-file", str(key_file), "--boot-dir", str(boot)]) == 2
    assert "site.key_file = '/root/site.key'" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--hostname", "Arb_1"], "--hostname 'Arb_1'"),
    (["--hostname", "arb1", "--operator", "root"], "--operator 'root'"),
    (["--hostname", "arb1", "--address", "192.0.2.20/24", "--gateway", "198.51.100.1"], "a gateway inside that network"),
    (["--hostname", "arb1", "--address", "192.0.2.20"], "an IPv4 address with its prefix"),
])
def test_bad_access_settings_are_refused(tmp_path, boot, capsys, args, message):
    conf, key_file, _ = site_files(tmp_path)
    (tmp_path / "id.pub").write_text(PUBKEY)
    assert provision(["--config", str(conf), "--key-file", str(key_file), "--ssh-key", str(tmp_path / "id.pub"),
                      *args, "--boot-dir", str(boot)]) == 2
    assert message in capsys.readouterr().err and not (boot / "custom.toml").exists()


def test_a_private_key_is_refused(tmp_path, boot, capsys):
    conf, key_file, _ = site_files(tmp_path)
    (tmp_path / "id").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n")
    assert provision(["--config", str(conf), "--key-file", str(key_file), "--hostname", "arb1", "--ssh-key",
                      str(tmp_path / "id"), "--boot-dir", str(boot)]) == 2
    assert "this is a private key" in capsys.readouterr().err


def test_a_card_that_booted_already_is_refused_for_custom_toml(tmp_path, boot, capsys):
    # Pi OS's firstboot takes itself out of cmdline.txt: custom.toml would never be read
    (boot / "cmdline.txt").write_text("console=serial0,115200 root=PARTUUID=1234abcd-02 rootwait\n")
    conf, key_file, _ = site_files(tmp_path)
    (tmp_path / "id.pub").write_text(PUBKEY)
    assert provision(["--config", str(conf), "--key-file", str(key_file), "--hostname", "arb1", "--ssh-key",
                      str(tmp_path / "id.pub"), "--boot-dir", str(boot)]) == 1
    assert "custom.toml would be ignored" in capsys.readouterr().err
