"""What the rig builds must always be torn down, even when building fails half way."""
from __future__ import annotations

from typing import Any


class Built:
    """A context manager over ``build()`` and ``close()``; a failed build is closed too."""

    def build(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
