"""A plain folder of images, no labels: inference inputs and unlabelled pools."""

from __future__ import annotations

from pathlib import Path

from drivelab import schema as schemas
from drivelab.data.index import Entry, FileIndex, is_image_file
from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.schema import ClassSchema


def index_files(root: str | Path, recursive: bool = True) -> FileIndex:
    """Every image file under ``root`` (recursively unless told otherwise), sorted. Hidden folders
    (``.drivelab/`` holds the label app's history and store) are not data. Each image is its own
    size group: a folder of inference inputs may mix sizes."""
    root = Path(root)
    pattern = "**/*" if recursive else "*"
    files = sorted(
        p
        for p in root.glob(pattern)
        if is_image_file(p)
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    entries = [Entry(p.relative_to(root).as_posix(), f"/{p}", p, split="pool") for p in files]
    return FileIndex("folder", root, entries)


class FolderReader(Reader):
    format = "folder"

    def __init__(self, root: str | Path, schema: ClassSchema | None = None, recursive: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DrivelabError("folder not found", self.root)
        self.schema = schema or schemas.comma10k()
        self.file_index = index_files(self.root, recursive)
        if not self.file_index.entries:
            raise DrivelabError("no images found", self.root)
        self.items = [Item(e.name, e.image, None, split=e.split) for e in self.file_index.entries]
