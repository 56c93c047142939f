"""One CLI vocabulary: every verb that has one of the shared options spells it the same way with the
same default, `drivelab --help` groups verbs by pillar, name=value and old spellings still work."""

from __future__ import annotations

import subprocess
import sys

import typer

from drivelab.cli import app
from drivelab.cliutil import is_group, normalize_argv

# option name -> (flags it must have, default or None when the verb picks it)
SHARED = {
    "--device": ({"--device"}, "auto"),
    "--batch": ({"--batch"}, None),
    "--workers": ({"--workers"}, None),
    "--out": ({"--out", "-o"}, None),
    "--size": ({"--size"}, None),
    "--json": ({"--json"}, None),
    "--progress": ({"--progress"}, True),
    "--ray": ({"--ray"}, None),
}
# Spellings of the shared ideas that are not allowed anywhere.
FORBIDDEN = {"--batch-size", "--height", "--width", "--quiet", "--num-workers", "--output", "--json-out"}


def _commands() -> list[tuple[str, object]]:
    root = typer.main.get_command(app)
    out = []

    def walk(group, prefix: str) -> None:
        ctx = group.context_class(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if is_group(cmd):
                walk(cmd, f"{prefix}{name} ")
            else:
                out.append((prefix + name, cmd))

    walk(root, "")
    return out


def test_every_verb_speaks_the_shared_vocabulary() -> None:
    commands = _commands()
    assert len(commands) >= 25
    seen = set()
    for name, cmd in commands:
        for p in cmd.params:
            if getattr(p, "param_type_name", "") != "option":
                continue
            flags = set(p.opts) | set(p.secondary_opts)
            bad = flags & FORBIDDEN
            assert not bad, f"{name}: {sorted(bad)} (use the shared name)"
            for key, (required, default) in SHARED.items():
                if key in p.opts:
                    seen.add(key)
                    assert required <= flags, f"{name} {key}: needs {sorted(required)}, has {sorted(flags)}"
                    if default is not None:
                        assert p.default == default, f"{name} {key}: default {p.default!r}, want {default!r}"
    assert seen == set(SHARED)  # each shared option is used somewhere


def test_help_groups_verbs_by_pillar() -> None:
    res = subprocess.run([sys.executable, "-m", "drivelab.cli", "--help"], capture_output=True, text=True,
                         timeout=120, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    for panel in ("start here", "data", "label", "seg", "engine", "vq"):
        assert f"─ {panel} " in res.stdout, panel
    probe = subprocess.run([sys.executable, "-c", "import sys, drivelab.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "False"  # --help stays fast: no verb imports torch at module level


def test_key_value_and_deprecated_spellings() -> None:
    argv = normalize_argv(app, ["evaluate", "runs/a", "data/x", "device=cpu", "batch=4"])
    assert argv == ["evaluate", "runs/a", "data/x", "--device", "cpu", "--batch", "4"]
    with _stderr() as err:
        argv = normalize_argv(app, ["predict", "m.pt", "x.png", "--batch-size", "2"])
    assert argv == ["predict", "m.pt", "x.png", "--batch", "2"] and "deprecated" in err.getvalue()
    sized = normalize_argv(app, ["export", "m.pt", "--height", "64", "--width", "96"])
    assert sized[-2:] == ["--size", "64x96"]
    assert normalize_argv(app, ["train", "synth", "--data", "d"]) == ["train", "synth", "data=d"]
    assert normalize_argv(app, ["validate", "d", "-q"]) == ["validate", "d", "--no-progress"]
    vq_train = normalize_argv(app, ["vq", "train", "t", "--width", "32"])
    assert vq_train == ["vq", "train", "t", "--embed-width", "32"]
    assert normalize_argv(app, ["map", "t", "--size", "entropy"]) == ["map", "t", "--dot-size", "entropy"]
    assert normalize_argv(app, ["vq", "compress", "x", "workers=3"])[-2:] == ["--workers", "3"]
    # train keeps its key=value overrides as they are (config keys, not options)
    assert normalize_argv(app, ["train", "synth", "lr=0.1"]) == ["train", "synth", "lr=0.1"]


class _stderr:
    def __enter__(self):
        import contextlib
        import io

        self.buf = io.StringIO()
        self._cm = contextlib.redirect_stderr(self.buf)
        self._cm.__enter__()
        return self.buf

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        return False
