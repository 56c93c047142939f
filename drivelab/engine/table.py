"""The per-sample table every engine verb reads: one row per image, features row-aligned.

On disk (written by ``drivelab embed``, see ``drivelab.engine.embed``)::

    <dir>/table.parquet   name, split, image_path, label_path, labelled, height, width, brightness,
                          loss, pixel_acc, miou, iou_<class>..., entropy, margin,
                          share_<class>... (label), pred_share_<class>... (prediction),
                          instances / pred_instances (instance models), pred_path
    <dir>/features.npy    float32 (N, D), row i belongs to row i of the table; opened memory-mapped
                          (read-only), so a pool of a million 512-d rows costs no RAM until read,
                          and every verb reads it in row blocks (``iter_blocks``)
    <dir>/embed.json      what made it: checkpoint, dataset, task, classes, feature_dim, size

A table may instead carry its features in a ``features`` column (lists of floats), which is
what a hand-made Parquet file from another tool usually looks like. Only ``name`` and the
features are required; every verb checks for the columns it needs and says which are missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from drivelab.errors import DrivelabError

TABLE = "table.parquet"
FEATURES = "features.npy"
META = "embed.json"


@dataclass
class EmbedTable:
    """A loaded per-sample table: ``df`` (one row per sample), ``features`` (N, D) float32
    row-aligned with ``df``, ``meta`` (embed.json, empty when absent) and where it came from."""

    df: pd.DataFrame
    features: np.ndarray
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.df)

    @property
    def names(self) -> list[str]:
        return self.df["name"].astype(str).tolist()

    @property
    def folder(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    def finite_rows(self) -> np.ndarray:
        """Boolean (N,): rows whose feature vector is all finite (NaN/inf rows are excluded
        from projection, clustering, selection and pruning, and reported)."""
        return finite_rows(self.features)

    def name_array(self) -> np.ndarray:
        """Names as an object array (index it with row numbers; ``names`` rebuilds a list)."""
        return self.df["name"].astype(str).to_numpy(dtype=object)

    def column(self, name: str, default: float = np.nan) -> np.ndarray:
        """A numeric column as float64 (``default`` everywhere when the column is absent)."""
        if name not in self.df.columns:
            return np.full(len(self.df), default, dtype=np.float64)
        return pd.to_numeric(self.df[name], errors="coerce").to_numpy(dtype=np.float64)

    def require(self, columns: list[str], why: str) -> None:
        missing = [c for c in columns if c not in self.df.columns]
        if missing:
            raise DrivelabError(
                f"the table has no column(s) {', '.join(missing)} (needed {why}); "
                "make it with `drivelab embed`",
                self.path,
            )

    def class_names(self) -> list[str]:
        """Class names, from embed.json or from the ``iou_<class>`` / ``share_<class>`` columns."""
        if self.meta.get("classes"):
            return list(self.meta["classes"])
        cols = [c for c in self.df.columns if c.startswith("iou_")]
        return [c[4:] for c in cols]


BLOCK_ROWS = 65536  # rows per block when a verb walks the features (~128 MB at 512-d float32)


def iter_blocks(n: int, block: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges covering ``n`` rows in blocks of ``block`` (default BLOCK_ROWS)."""
    block = block or BLOCK_ROWS
    for start in range(0, n, block):
        yield start, min(n, start + block)


def finite_rows(features: np.ndarray) -> np.ndarray:
    """Boolean (N,): rows whose vector is all finite, read block by block (a memory-mapped matrix
    is never materialised, nor an (N, D) boolean temporary)."""
    out = np.zeros(len(features), dtype=bool)
    for a, b in iter_blocks(len(features)):
        out[a:b] = np.isfinite(features[a:b]).all(axis=1)
    return out


def resolve(path: str | Path) -> Path:
    """A table path or the folder ``drivelab embed`` wrote -> the table file."""
    path = Path(path)
    if path.is_dir():
        path = path / TABLE
    if not path.exists():
        raise DrivelabError(
            "table not found (give the table file or the folder `drivelab embed` wrote)", path
        )
    return path


def load_table(path: str | Path) -> EmbedTable:
    """Read and validate a per-sample table (Parquet or CSV) and its features."""
    path = resolve(path)
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:  # pyarrow/pandas raise many kinds for a bad file
        raise DrivelabError(f"cannot read the table ({type(e).__name__}: {e})", path) from None
    meta_path = path.parent / META
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if "name" not in df.columns:
        raise DrivelabError("the table has no 'name' column", path)
    dup = df["name"][df["name"].duplicated()]
    if len(dup):
        raise DrivelabError(f"the table lists {len(dup)} name(s) twice, e.g. {dup.iloc[0]!r}", path)
    features = _features(df, path, meta)
    df = df.drop(columns=["features"], errors="ignore").reset_index(drop=True)
    if meta.get("feature_dim") is not None and features.shape[1] != int(meta["feature_dim"]):
        raise DrivelabError(
            f"features have {features.shape[1]} dimensions but embed.json says "
            f"{meta['feature_dim']}: the feature file belongs to another model",
            path,
        )
    return EmbedTable(df, features, meta, path)


def _features(df: pd.DataFrame, path: Path, meta: dict) -> np.ndarray:
    if "features" in df.columns:
        try:
            rows = [np.asarray(v, dtype=np.float32) for v in df["features"]]
            feats = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
        except ValueError:
            raise DrivelabError("the 'features' column holds vectors of different lengths", path) from None
        return feats.reshape(len(df), -1)
    fpath = path.parent / meta.get("features", FEATURES)
    if not fpath.exists():
        raise DrivelabError(
            f"no features: the table has no 'features' column and {fpath.name} is missing beside it", path
        )
    try:
        feats = np.load(fpath, mmap_mode="r")
    except ValueError as e:  # not an .npy file, or an object array
        raise DrivelabError(f"cannot read the feature matrix ({e})", fpath) from None
    if feats.ndim != 2:
        raise DrivelabError(f"features must be a 2-D (N, D) matrix, got shape {feats.shape}", fpath)
    if len(feats) != len(df):
        raise DrivelabError(
            f"the feature matrix has {len(feats)} rows but the table has {len(df)}: "
            "they are not from the same embed run",
            fpath,
        )
    if feats.dtype != np.float32:
        # Only a hand-made file of another dtype is converted (in memory); embed writes float32.
        feats = np.asarray(feats, dtype=np.float32)
    return feats


def check_names(table: EmbedTable, names: list[str], what: str | Path) -> None:
    """Fail with a clear message when the table's names are not (all) in a dataset/another table."""
    known = set(names)
    missing = [n for n in table.names if n not in known]
    if missing:
        raise DrivelabError(
            f"{len(missing)} of the table's {len(table)} names are not in {what} "
            f"(e.g. {missing[0]!r}): the table was made from another dataset",
            table.path,
        )


def check_same_space(a: EmbedTable, b: EmbedTable) -> None:
    """Two tables whose features must be comparable (same model): same dimension and model."""
    if a.features.shape[1] != b.features.shape[1]:
        raise DrivelabError(
            f"feature sizes differ ({a.features.shape[1]} vs {b.features.shape[1]}): the tables "
            "come from different models",
            b.path,
        )
    ca, cb = a.meta.get("checkpoint"), b.meta.get("checkpoint")
    if ca and cb and a.meta.get("model_spec") != b.meta.get("model_spec"):
        raise DrivelabError(f"the tables come from different models ({ca} vs {cb})", b.path)


def read_name_list(path: str | Path) -> list[str]:
    """A list file (one name per line, '#' comments) or a table's ``name`` column."""
    path = Path(path)
    if not path.exists():
        raise DrivelabError("list file not found", path)
    if path.suffix in (".parquet", ".csv") or path.is_dir():
        return load_table(path).names if path.is_dir() else _names_from_frame(path)
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln]


def _names_from_frame(path: Path) -> list[str]:
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if "name" not in df.columns:
        raise DrivelabError("the file has no 'name' column", path)
    return df["name"].astype(str).tolist()


def write_name_list(path: str | Path, names: list[str], header: str | None = None) -> None:
    from drivelab.io import write_text

    text = (f"# {header}\n" if header else "") + "".join(f"{n}\n" for n in names)
    write_text(path, text)
