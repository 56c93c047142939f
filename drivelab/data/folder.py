"""A plain folder of images, no labels: inference inputs and unlabelled pools."""

from __future__ import annotations

from pathlib import Path

from drivelab import schema as schemas
from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import IMAGE_SUFFIXES
from drivelab.schema import ClassSchema


class FolderReader(Reader):
    format = "folder"

    def __init__(self, root: str | Path, schema: ClassSchema | None = None, recursive: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DrivelabError("folder not found", self.root)
        self.schema = schema or schemas.comma10k()
        pattern = "**/*" if recursive else "*"
        # Hidden folders (.drivelab/ holds the label app's history and store) are not data.
        files = sorted(
            p
            for p in self.root.glob(pattern)
            if p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        )
        if not files:
            raise DrivelabError("no images found", self.root)
        self.items = [Item(str(p.relative_to(self.root)), p, None, split="pool") for p in files]
