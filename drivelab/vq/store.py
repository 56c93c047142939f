"""Archive-level shared state: model weights and trained starting states, stored once per archive.

A codec that needs state beyond one segment's payload (the ``prior`` network's weights, the
``context`` model's trained starting state, a GPT's weights) puts the bytes into a
``SharedStore`` while encoding and records only their SHA-256 in the segment header
(``extra["shared"] = {role: sha256}``; ``api.compress`` copies the references into
``Header.shared``). Where the bytes live is the archive's business, not the codec's:

* an archive folder or challenge zip keeps each blob once, as ``shared/<sha256>.bin``;
* a standalone ``.dlvq`` file stores the blobs it references inline (self-contained);
* a blob can also stay outside (``--no-embed``) and be handed back when decoding
  (``--model FILE``: ``add_file``), checked by its SHA-256.

Decoding asks the store for a reference with ``get``; a missing blob or one whose bytes do not
hash to the reference is a one-line DrivelabError.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from drivelab.errors import DrivelabError
from drivelab.vq.container import sha256

BLOB_SUFFIX = ".bin"


class SharedStore:
    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self._blobs: dict[str, bytes] = {}
        self._folders: list[Path] = []
        for ref, data in (blobs or {}).items():
            if sha256(data) != ref:
                raise DrivelabError(f"shared state {ref[:12]} does not match its SHA-256")
            self._blobs[ref] = data

    def put(self, data: bytes) -> str:
        """Store ``data`` (once, however often it is put) and return its reference."""
        ref = sha256(data)
        self._blobs.setdefault(ref, bytes(data))
        return ref

    def add_file(self, path: str | Path) -> str:
        path = Path(path)
        if not path.is_file():
            raise DrivelabError("file not found", path)
        return self.put(path.read_bytes())

    def add_folder(self, folder: str | Path) -> None:
        """Resolve references from ``folder/<sha256>.bin`` files, read on first use."""
        self._folders.append(Path(folder))

    def __contains__(self, ref: str) -> bool:
        return ref in self._blobs or any((f / f"{ref}{BLOB_SUFFIX}").is_file() for f in self._folders)

    def get(self, ref: str, what: str = "shared state") -> bytes:
        if ref not in self._blobs:
            for folder in self._folders:
                path = folder / f"{ref}{BLOB_SUFFIX}"
                if path.is_file():
                    data = path.read_bytes()
                    if sha256(data) != ref:
                        raise DrivelabError(f"{what} does not match the SHA-256 it is stored under", path)
                    self._blobs[ref] = data
                    break
            else:
                raise DrivelabError(
                    f"{what} {ref[:16]}... is not in the archive (was it encoded with --no-embed? "
                    "pass the file with --model)")
        return self._blobs[ref]

    def items(self) -> Iterator[tuple[str, bytes]]:
        yield from sorted(self._blobs.items())

    def subset(self, refs: list[str]) -> dict[str, bytes]:
        return {ref: self.get(ref) for ref in refs}
