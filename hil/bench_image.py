"""Image figures: build time of a 512 MiB image, flash throughput and verify time to a file.

    python -m hil.bench_image
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from host_tools.flash import flash
from host_tools.image import build


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-image-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "base/boot").mkdir(parents=True)
        (tmp / "base/root/etc").mkdir(parents=True)
        (tmp / "base/boot/config.txt").write_text("arm_64bit=1\n")
        (tmp / "base/root/etc/hostname").write_text("arbiter\n")
        t0 = time.monotonic()
        build(tmp / "arbiter.img", 512, 256, tmp / "base", None)
        built = time.monotonic() - t0
        result = flash(tmp / "arbiter.img", tmp / "card.img", quiet=True)
    print(f"image build (512 MiB, small base): {built:.1f} s")
    print(f"flash to a file: {result['write_mib_s']} MiB/s ({result['write_s']} s for 512 MiB, fsync included)")
    print(f"verify (read back, SHA-256): {result['verify_s']} s")


if __name__ == "__main__":
    main()
