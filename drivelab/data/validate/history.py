"""Are the images unchanged? Against reference hashes (``--hashes``) or, when the dataset is a git
checkout, against its own history (``git`` subprocesses, read-only).

comma10k's CI (``.github/workflows/dont_modify_imgs.yml``) fails when ``git diff --name-only HEAD
<commit> imgs/0*`` (and ``imgs/1*`` against a second commit) lists anything: no image of those
thousands may be changed, added, renamed or deleted after the pinned commit. A checkout that holds
those commits (the real comma10k repository) gets exactly that rule; any other git checkout gets
the same idea with each image's own commit as the pin: an image must be byte-identical to the
version first committed, and a committed image may not disappear. The working tree is judged as
it would be committed (untracked files count, ignored ones do not).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from drivelab.errors import DrivelabError
from drivelab.io import write_json, write_text

# dont_modify_imgs.yml: path prefix -> the commit of the comma10k repository it is pinned to.
COMMA10K_PINNED = {
    "imgs/0": "0266ab9dbef438f36171de9fe3cb7938bb2bd0b2",
    "imgs/1": "4cee1fb54a016a72af204dd1b8effe4cb007df54",
}


# --------------------------------------------------------------------------- hash files
def read_hashes(path: str | Path) -> dict[str, str]:
    """Reference hashes: ``sha1  name`` lines (``sha1sum`` output) or a JSON object name -> sha1."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DrivelabError(f"cannot read hash file ({e.strerror or e})", path) from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DrivelabError(f"malformed hash json ({e})", path) from None
        if not isinstance(data, dict):
            raise DrivelabError("hash json must be an object name -> sha1", path)
        return {str(k): str(v).lower() for k, v in data.items()}
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 40:
            raise DrivelabError(f"line {n}: expected 'sha1  name', got {line[:80]!r}", path)
        out[parts[1].lstrip("*").strip()] = parts[0].lower()
    return out


def write_hash_file(path: str | Path, hashes: dict[str, str]) -> None:
    """Write hashes as ``sha1  name`` lines (``sha1sum -c`` checks them too) or JSON for ``.json``."""
    path = Path(path)
    if path.suffix == ".json":
        write_json(path, dict(sorted(hashes.items())))
    else:
        write_text(path, "".join(f"{h}  {n}\n" for n, h in sorted(hashes.items())))


def sha1_file(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- git
class GitError(Exception):
    pass


@dataclass
class Pin:
    """What an image path must hold: the blob ``blob`` as of ``commit``."""

    blob: str
    commit: str


class GitCheckout:
    """A dataset whose root is the top of a git work tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, root: Path) -> tuple[GitCheckout | None, str | None]:
        """(checkout, None), or (None, why not) where ``root`` looks like a checkout but git
        cannot read it, or (None, None) when it is not a checkout at all."""
        if not (root / ".git").exists():
            return None, None
        repo = cls(root)
        try:
            top = repo._git("rev-parse", "--show-toplevel").strip()
        except GitError as e:
            return None, str(e)
        if Path(top).resolve() != root.resolve():
            return None, None
        return repo, None

    def _git(self, *args: str, input: str | None = None) -> str:
        try:
            proc = subprocess.run(["git", "-C", str(self.root), "-c", "core.quotepath=false", *args],
                                  capture_output=True, text=True, timeout=600, input=input,
                                  env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # never write the index
        except (OSError, subprocess.TimeoutExpired) as e:
            raise GitError(f"git {args[0]} failed ({e})") from None
        if proc.returncode != 0:
            line = (proc.stderr.strip().splitlines() or ["no message"])[0]
            raise GitError(f"git {args[0]} failed: {line}")
        return proc.stdout

    def files(self) -> set[str]:
        """Files a commit of the working tree would hold (tracked or untracked, not ignored, on disk)."""
        out = self._git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
        return {p for p in out.split("\0") if p and os.path.lexists(self.root / p)}

    def has_commit(self, commit: str) -> bool:
        try:
            self._git("cat-file", "-e", f"{commit}^{{commit}}")
        except GitError:
            return False
        return True

    def tree(self, commit: str, folder: str) -> dict[str, str]:
        """path -> blob of the files under ``folder`` at ``commit``."""
        out = self._git("ls-tree", "-r", "-z", "--full-tree", commit, "--", folder)
        blobs = {}
        for line in out.split("\0"):
            if line:
                meta, _, path = line.partition("\t")
                blobs[path] = meta.split()[2]
        return blobs

    def first_commits(self, folders: list[str]) -> dict[str, Pin]:
        """For every path ever added under ``folders``: the blob it was first committed with."""
        if not folders or not self.has_commit("HEAD"):  # a fresh `git init`: no history yet
            return {}
        out = self._git("log", "--reverse", "--no-renames", "--diff-filter=A", "--raw", "--no-abbrev",
                        "--format=commit %H", "--", *folders)
        pins: dict[str, Pin] = {}
        commit = ""
        for line in out.splitlines():
            if line.startswith("commit "):
                commit = line[7:]
            elif line.startswith(":"):
                meta, _, path = line.partition("\t")
                if path.startswith('"'):  # C-quoted (tabs, newlines, quotes in the name)
                    path = codecs.escape_decode(path[1:-1].encode())[0].decode("utf-8")
                pins.setdefault(path, Pin(meta.split()[3], commit))
        return pins

    def blobs_of(self, paths: list[str]) -> dict[str, str]:
        """git's own blob ids of working-tree files (applies the checkout's filters, e.g. LFS)."""
        if not paths:
            return {}
        out = self._git("hash-object", "--stdin-paths", input="".join(f"{p}\n" for p in paths))
        return dict(zip(paths, out.split(), strict=True))
