"""The context-manager protocol of the engine's objects that hold threads or processes.

``with obj:`` hands back ``obj`` and calls ``obj.close()`` on the way out, however the block
ends; a class that closes differently after an error (the worker pool cancels its pending work)
overrides :meth:`Closing._close_on_exit`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """Mixin: ``with`` closes the object (see the module docstring)."""

    def close(self) -> None:
        """Release what the object holds; subclasses implement it."""
        raise NotImplementedError

    def _close_on_exit(self, error: BaseException | None) -> None:
        """Close on leaving a ``with`` block; ``error`` is what the block raised, if anything."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_on_exit(exc)
