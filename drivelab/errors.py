"""The one exception type users see.

Anything raised as ``DrivelabError`` is printed by the CLI as a single line
(``error: <file>: <problem>``) with exit code 2, never as a traceback.
"""

from __future__ import annotations

from pathlib import Path


class DrivelabError(Exception):
    """A problem with the user's input that deserves a one-line message, not a traceback."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)
