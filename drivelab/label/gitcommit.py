"""Commit changed masks to a branch of the dataset's git repository without touching the checkout.

comma10k takes mask fixes as pull requests. The app commits saved masks to a branch (default
``label/<user>``) with git plumbing and a private index file, so the labeller's working tree,
index and current branch stay exactly as they were; pushing the branch is left to the user.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from drivelab.errors import DrivelabError


def _git(args: list[str], cwd: Path, env: dict | None = None, input: bytes | None = None) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, env=env, input=input, capture_output=True, check=True)
    except FileNotFoundError:
        raise DrivelabError("git is not installed") from None
    except subprocess.CalledProcessError as e:
        msg = e.stderr.decode(errors="replace").strip().splitlines()
        raise DrivelabError(f"git {args[0]} failed: {msg[-1] if msg else e.returncode}", cwd) from None
    return out.stdout.decode().strip()


def repo_root(path: str | Path) -> Path | None:
    """The top folder of the git repository holding ``path``, or None when it is not in one."""
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True)
    except FileNotFoundError:
        return None
    return Path(out.stdout.decode().strip()) if out.returncode == 0 else None


def commit_files(dataset_root: str | Path, files: list[Path], branch: str, message: str,
                 author: str | None = None) -> dict:
    """Commit ``files`` (their current content) onto ``branch``; the branch starts from HEAD when
    it does not exist yet. Returns {"branch", "commit", "files"}."""
    dataset_root = Path(dataset_root).resolve()
    top = repo_root(dataset_root)
    if top is None:
        raise DrivelabError("the dataset is not a git repository; nothing to commit to", dataset_root)
    if not files:
        raise DrivelabError("no changed masks to commit", dataset_root)
    _git(["check-ref-format", "--branch", branch], top)
    ref = f"refs/heads/{branch}"
    existed = _exists(top, ref)
    parent = _git(["rev-parse", "--verify", "-q", ref if existed else "HEAD"], top)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if author:
            # git drops <, > and newlines from ident names itself; the e-mail gets a plain slug.
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", author).strip("-.") or "user"
            env.update(GIT_AUTHOR_NAME=author, GIT_COMMITTER_NAME=author)
            env.setdefault("GIT_AUTHOR_EMAIL", f"{slug}@drivelab.local")
            env.setdefault("GIT_COMMITTER_EMAIL", f"{slug}@drivelab.local")
        _git(["read-tree", parent], top, env)
        rels = []
        for f in files:
            rel = Path(f).resolve().relative_to(top).as_posix()
            blob = _git(["hash-object", "-w", "--", rel], top, env)
            _git(["update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}"], top, env)
            rels.append(rel)
        tree = _git(["write-tree"], top, env)
        commit = _git(["commit-tree", tree, "-p", parent, "-m", message], top, env)
        # The old value makes the update fail if someone moved the branch meanwhile.
        _git(["update-ref", ref, commit, parent if existed else "0" * 40], top, env)
    return {"branch": branch, "commit": commit, "files": rels}


def _exists(top: Path, ref: str) -> bool:
    out = subprocess.run(["git", "rev-parse", "--verify", "-q", ref], cwd=top, capture_output=True)
    return out.returncode == 0
