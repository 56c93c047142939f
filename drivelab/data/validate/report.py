"""What validation returns: one ``Problem`` per thing wrong with one file, collected in a
``ValidationReport`` with notes, hashes and the sizes each folder had to have."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

Size = tuple[int, int]

# Appended to every default-profile message whose rule goes further than comma10k's own CI.
BEYOND_CI = "beyond comma10k's CI"


@dataclass
class Problem:
    """One thing wrong with one file. ``colors`` holds the most common wrong values as
    ``(value, count)`` (``value`` is ``#rrggbb`` for colour masks, an int for id masks);
    ``bbox`` is ``(x0, y0, x1, y1)``, inclusive pixel coordinates of the wrong pixels."""

    path: Path
    kind: str
    message: str
    count: int | None = None
    colors: list[tuple[str | int, int]] | None = None
    bbox: tuple[int, int, int, int] | None = None

    def display_path(self, root: Path | None = None) -> str:
        if root is not None:
            try:
                return self.path.relative_to(root).as_posix()
            except ValueError:
                pass
        return str(self.path)

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.message}"


@dataclass
class ValidationReport:
    root: Path
    format: str
    profile: str = "default"
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # image name (relative, posix) -> sha1
    sizes: dict[str, Size] = field(default_factory=dict)  # folder -> the size its images must have

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def errors(self) -> list[Problem]:
        return self.problems

    def add(self, path: Path, kind: str, message: str, **details) -> None:
        self.problems.append(Problem(path, kind, message, **details))

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems).most_common())

    def summary(self) -> str:
        n = len(self.problems)
        what = self.format if self.profile == "default" else f"{self.format} ({self.profile})"
        head = f"{what}: {self.checked} files checked, {n} problem{'' if n == 1 else 's'}"
        if not self.problems:
            return head
        files = len({p.path for p in self.problems})
        kinds = ", ".join(f"{n} {k}" for k, n in self.by_kind().items())
        return f"{head} in {files} file{'' if files == 1 else 's'} ({kinds})"

    def to_dict(self) -> dict:
        """Plain JSON-able form (``drivelab validate --json``)."""
        return {
            "root": str(self.root),
            "format": self.format,
            "profile": self.profile,
            "ok": self.ok,
            "summary": self.summary(),
            "checked": self.checked,
            "problems": [
                {"path": p.display_path(self.root), "kind": p.kind, "message": p.message, "count": p.count,
                 "colors": p.colors, "bbox": p.bbox}
                for p in self.problems
            ],
            "notes": list(self.notes),
            "sizes": {k: list(v) for k, v in self.sizes.items()},
        }

    def __str__(self) -> str:
        return "\n".join([*(str(p) for p in self.problems), self.summary()])
