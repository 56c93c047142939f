"""Label app under load, and at 100k images (issues 13 and 18). Not run by CI.

    python benchmarks/label_load.py [--n 100000] [--small 10000] [--clients 8] [--requests 500]

Builds comma10k-layout datasets of ``--small`` and ``--n`` images (hard links to one real 320x240
image and mask, so every file decodes; half of the images have a mask, 10% have a review record
and all have a model loss), then prints:

1. **open**: ``create_app`` (reader scan, index, recovery) plus the first grid page, per size, with
   the time per image so a reader sees how it grows (bar: 100k opens in under 2 s);
2. **grid pages** in-process at each size: p50/p99 of ``/api/images`` for each sort and filter
   (bar: under 200 ms), next to the peer, what the app did before paging (the whole list as JSON
   on every request);
3. **load**: a real server (``drivelab label``, its own process) on the big set, ``--clients``
   threads sending ``--requests`` requests in all on 127.0.0.1 (list pages, thumbnails, masks,
   review records, a few saves); p50/p99 per kind, and the server's start-up time.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SORTS = ("name", "loss", "priority", "status")


def build(root: Path, n: int, seed: int = 0) -> Path:
    """comma10k layout with ``n`` images (hard links), half with masks, a loss table, 10% reviewed."""
    import numpy as np
    import pandas as pd

    from drivelab.data.synth import synth_dataset
    from drivelab.label.store import STATUSES, ReviewStore

    proto = synth_dataset("comma10k", root.parent / f"{root.name}.proto", n=1, size=(240, 320), seed=seed)
    # File systems cap hard links per file (ext4: 65000), so link to a few copies in turn.
    copies = max(1, n // 30_000 + 1)
    imgs = [shutil.copy(next((proto / "imgs").iterdir()), proto / f"img{k}.png") for k in range(copies)]
    masks = [shutil.copy(next((proto / "masks").iterdir()), proto / f"mask{k}.png") for k in range(copies)]
    (root / "imgs").mkdir(parents=True)
    (root / "masks").mkdir()
    names = [f"{i:06d}_bench{'9' if i % 10 == 9 else '0'}.png" for i in range(n)]
    for i, name in enumerate(names):
        os.link(imgs[i % copies], root / "imgs" / name)
        if i % 2 == 0:
            os.link(masks[i % copies], root / "masks" / name)
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"name": names, "loss": rng.uniform(0, 2, n)})
    table.to_parquet(root.parent / f"{root.name}.parquet")
    store = ReviewStore(root)
    db = sqlite3.connect(store.path)
    rows = [(nm, STATUSES[int(rng.integers(len(STATUSES)))], f"user{int(rng.integers(8))}",
             float(rng.uniform(0, 5)), 0, time.time(), k + 1, 0)
            for k, nm in enumerate(names[:: 10])]
    db.executemany("INSERT INTO review (name, status, holder, priority, version, updated, seq, n_comments) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (len(rows),))
    db.commit()
    db.close()
    shutil.rmtree(proto)
    return root


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def measure_sizes(work: Path, sizes: list[int]) -> None:
    import json

    from fastapi.testclient import TestClient

    from drivelab.label.app import create_app

    print("\n### open and grid pages (in-process, TestClient)\n")
    from drivelab.data import open_dataset

    print("Wall time depends on the machine's load; CPU time (this process, all threads) is what the same "
          "work costs on an idle core.\n")
    print("| images | open: create_app + first page, wall / CPU | of which the dataset reader, wall / CPU | "
          "CPU per image | p50 / p99 of a grid page (240 rows), by query | "
          "peer: whole list as JSON (before paging) |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        root = work / f"set{n}"
        t0, c0 = time.perf_counter(), time.process_time()
        open_dataset(root)
        t_reader, c_reader = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        app = create_app(root, table=work / f"set{n}.parquet")
        gc.freeze()  # what the `drivelab label` server does after start-up (label/cli.py)
        c = TestClient(app, base_url="http://127.0.0.1:8765")
        first = c.get("/api/images", params={"sort": "loss"})
        t_open, c_open = time.perf_counter() - t0, time.process_time() - c0
        assert first.status_code == 200 and first.json()["total"] == n
        queries = [{"sort": s} for s in SORTS] + [
            {"status": "needs_fix"}, {"split": "val", "sort": "loss"}, {"q": "123"},
            {"sort": "priority", "offset": n - 300}]
        cells = []
        for params in queries:
            times = []
            for _ in range(15):
                t = time.perf_counter()
                r = c.get("/api/images", params=params)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200
            label = ",".join(f"{k}={v}" for k, v in params.items())
            cells.append(f"{label}: {ms(pct(times, 50))} / {ms(pct(times, 99))}")
        t = time.perf_counter()
        rows = []
        for off in range(0, n, 1000):
            rows += app.state.label.index.page(offset=off, limit=1000)["items"]
        whole = json.dumps({"total": n, "items": rows})
        t_whole = time.perf_counter() - t
        print(f"| {n:,} | {t_open:.2f} / {c_open:.2f} s | {t_reader:.2f} / {c_reader:.2f} s | "
              f"{c_open / n * 1e6:.1f} µs | {'<br>'.join(cells)} (ms) | "
              f"{t_whole:.2f} s, {len(whole) / 1e6:.1f} MB per request |")


def load_test(work: Path, n: int, clients: int, total: int) -> None:
    import httpx
    import numpy as np

    root = work / f"set{n}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "drivelab.cli", "label", str(root), "--port", str(port),
                             "--table", str(work / f"set{n}.parquet")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(base + "/api/images", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
        if proc.poll() is not None:
            raise SystemExit("server exited")
    t_start = time.perf_counter() - t0
    names = [f"{i:06d}_bench{'9' if i % 10 == 9 else '0'}.png" for i in range(n)]
    lat: dict[str, list[float]] = {}
    lock = threading.Lock()
    per_client = total // clients
    errors = []
    saves = iter(range(0, n, 2))  # images with a mask, each saved once (version 0 -> 1)
    mask = np.zeros((240, 320), np.uint8).tobytes()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=60) as c:
            c.headers["X-Drivelab-CSRF"] = c.get("/api/session").json()["csrf"]
            for _ in range(per_client):
                r = rng.random()
                name = names[rng.randrange(n)]
                if r < 0.40:
                    kind, req = "images page", ("GET", "/api/images", {
                        "sort": rng.choice(SORTS), "offset": rng.choice([0, 240, 480, rng.randrange(n)]),
                        **({"status": "needs_fix"} if rng.random() < 0.2 else {})}, None)
                elif r < 0.70:
                    thumb = {"name": name, "kind": rng.choice(["image", "mask"])}
                    kind, req = "thumb", ("GET", "/api/thumb", thumb, None)
                elif r < 0.88:
                    kind, req = "mask", ("GET", "/api/mask", {"name": name}, None)
                elif r < 0.97:
                    kind, req = "review", ("GET", "/api/review", {"name": name}, None)
                else:
                    with lock:
                        target = names[next(saves)]
                    kind, req = "save", ("POST", "/api/mask", {"name": target, "version": 0}, mask)
                t = time.perf_counter()
                resp = c.request(req[0], req[1], params=req[2], content=req[3])
                dt = time.perf_counter() - t
                with lock:
                    lat.setdefault(kind, []).append(dt)
                    if resp.status_code != 200:
                        errors.append(f"{kind} {resp.status_code} {resp.text[:80]}")

    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    proc.terminate()
    proc.wait(10)
    every = [x for v in lat.values() for x in v]
    print(f"\n### load: {clients} clients, {len(every)} requests on 127.0.0.1, {n:,} images "
          f"(server start-up incl. Python imports: {t_start:.2f} s; load average {load0:.1f} before)\n")
    print("| request | count | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for kind in ("images page", "thumb", "mask", "review", "save"):
        if kind in lat:
            print(f"| {kind} | {len(lat[kind])} | {ms(pct(lat[kind], 50))} | {ms(pct(lat[kind], 99))} |")
    print(f"| all | {len(every)} | {ms(pct(every, 50))} | {ms(pct(every, 99))} |")
    shown = f": {errors[:3]}" if errors else ""
    print(f"\n{len(every) / wall:.0f} requests/s; {len(errors)} errors{shown}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="images in the big set")
    ap.add_argument("--small", type=int, default=10_000, help="images in the small set (how cost grows)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    ap.add_argument("--no-load", action="store_true", help="skip the live-server load test")
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="drivelab-label-load-"))
    try:
        t = time.perf_counter()
        for n in (args.small, args.n):
            build(work / f"set{n}", n)
        print(f"label app benchmark: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}, "
              f"datasets built in {time.perf_counter() - t:.0f} s")
        measure_sizes(work, [args.small, args.n])
        if not args.no_load:
            load_test(work, args.n, args.clients, args.requests)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
