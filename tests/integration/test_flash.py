"""arbiter-flash on files (and a loop device when the kernel offers one): write order,
read-back verification, refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.flash import HEAD, FlashError, check_target, flash, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def image(tmp_path):
    img = tmp_path / "arbiter.img"
    img.write_bytes(os.urandom(HEAD) + os.urandom(7 << 20))
    return img


def test_flash_to_a_file_and_verify(image, tmp_path, capsys):
    target = tmp_path / "card.img"
    assert main([str(image), str(target), "--yes", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verified"] and target.read_bytes() == image.read_bytes()


def test_boot_sector_is_written_last(image, tmp_path):
    target = tmp_path / "card.img"
    seen = {}

    def damage_check(path: Path) -> None:
        seen["head"] = path.read_bytes()[:HEAD]

    flash(image, target, quiet=True, after_write=damage_check)
    assert seen["head"] == image.read_bytes()[:HEAD]
    # interrupted before the head: the head of a fresh target is still blank
    partial = tmp_path / "partial.img"
    with pytest.raises(ZeroDivisionError):
        flash(image, partial, quiet=True, after_write=lambda p: 1 / 0)
    assert partial.read_bytes()[:HEAD] == image.read_bytes()[:HEAD]


def test_a_corrupted_write_is_a_loud_failure(image, tmp_path, capsys):
    target = tmp_path / "card.img"

    def flip(path: Path) -> None:
        with open(path, "r+b") as f:
            f.seek(5 << 20)
            b = f.read(1)
            f.seek(5 << 20)
            f.write(bytes([b[0] ^ 0xFF]))

    with pytest.raises(FlashError, match="VERIFY FAILED"):
        flash(image, target, quiet=True, after_write=flip)


def test_refuses_the_root_disk_and_mounted_devices(tmp_path):
    root_src = next(line.split()[0] for line in Path("/proc/mounts").read_text().splitlines()
                    if line.split()[1] == "/")
    if root_src.startswith("/dev/") and Path(root_src).exists():
        with pytest.raises(FlashError, match="running system"):
            check_target(Path(root_src))
    fake_mounts = tmp_path / "mounts"
    fake_mounts.write_text(f"{root_src} / ext4 rw 0 0\n/dev/loop7 /mnt/card vfat rw 0 0\n")
    loop7 = Path("/dev/loop7")
    if loop7.exists():
        with pytest.raises(FlashError, match="mounted filesystem at /mnt/card"):
            check_target(loop7, fake_mounts)


def test_without_yes_and_without_a_terminal_nothing_is_written(image, tmp_path):
    target = tmp_path / "card.img"
    done = subprocess.run([sys.executable, "-m", "host_tools.flash", str(image), str(target)], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 2 and "--yes" in done.stderr and not target.exists()


def test_loop_device(image, tmp_path):
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\0" * image.stat().st_size)
    attach = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if attach.returncode != 0:
        pytest.fail(f"losetup is needed for this test and failed: {attach.stderr.strip()}")
    dev = Path(attach.stdout.strip())
    try:
        assert flash(image, dev, quiet=True)["verified"]
    finally:
        subprocess.run(["losetup", "-d", str(dev)])
