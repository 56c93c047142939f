"""Codec registry. A codec turns (frames, 128) int16 tokens into a payload and back.

A codec is a module with::

    encode(tokens, **options) -> (payload, extra)
    decode(payload, extra, frames) -> tokens

``extra`` goes into the file header and must hold everything decoding needs besides the
payload and the shared state. Optional keyword arguments, passed only when the function
accepts them (so a codec opts in by naming them):

* ``store`` (both sides): the archive's ``SharedStore`` (drivelab.vq.store). Put weights or a
  trained starting state there with ``ref = store.put(blob)`` and record
  ``extra["shared"] = {"weights": ref}``; the decoder reads them back with ``store.get(ref)``.
  Stored once per archive however many segments use them.
* ``chain`` (both sides, codecs with ``SOLID = True``): an ``api.Chain`` carried from segment
  to segment of one solid chain; keep the model state in ``chain.state`` (``None`` for the
  first segment) so the next segment starts where this one ended.
* ``progress`` (decode): a callable taking a number of decoded tokens.

``REQUIREMENTS``: the PyPI distributions its decoder imports; a challenge zip pins their exact
versions. A codec that needs none beyond numpy says ``("numpy",)``. ``SOURCES``: the drivelab
files (repository-relative) its decoder imports beyond the core ones
(``drivelab.vq.submission.CORE_SOURCES``); a challenge zip ships them.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any

from drivelab.errors import DrivelabError

NAMES = ("lzma", "context", "gpt", "prior", "mix")
VERSIONS = {"lzma": 1, "context": 3, "gpt": 3, "prior": 2, "mix": 1}
_MODULES = {"lzma": "lzma_codec", "context": "context", "gpt": "gpt", "prior": "prior", "mix": "mix"}


def module(name: str) -> ModuleType:
    if name not in _MODULES:
        raise DrivelabError(f"unknown codec {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"drivelab.vq.codecs.{_MODULES[name]}")


def get(name: str) -> tuple[Any, Any]:
    mod = module(name)
    return mod.encode, mod.decode


def accepted(fn: Any, **kwargs: Any) -> dict[str, Any]:
    """The subset of ``kwargs`` that ``fn`` names (or all of them if it takes ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def solid(name: str) -> bool:
    return bool(getattr(module(name), "SOLID", False))


def sources(name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(getattr(module(name), "SOURCES", default))


def requirements(name: str) -> tuple[str, ...]:
    return tuple(getattr(module(name), "REQUIREMENTS", ("numpy", "numba", "constriction")))
