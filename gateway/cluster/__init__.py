"""Scale-out on Redis: the call directory and instance registry (directory.py) and the
control requests forwarded to the instance that holds a call (forward.py). Off without
``cluster.redis_url`` (and the redis package not even imported)."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable


class ClusterUnavailable(Exception):
    """Redis did not answer in time (down, slow or unreachable)."""


class CallTable(dict):
    """The application's live calls (``app[CALLS]``), telling ``on_change`` when a call is
    added or removed, so that the directory registers it without a call ever waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.on_change: Callable[[], None] | None = None

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changed()

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._changed()
        return value

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
