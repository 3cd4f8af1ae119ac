"""Test-wide settings. HYPOTHESIS_PROFILE=ci (set by .ci/run) makes the property tests draw
the same examples on every run, so a CI result can be reproduced; locally they explore anew."""
from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
