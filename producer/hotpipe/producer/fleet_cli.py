"""``hotpipe workers``: the live fleet, one block per worker (or JSON)."""

from __future__ import annotations

import json
from typing import Any


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def print_workers(workers: list[dict[str, Any]], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"workers": workers}))
        return
    if not workers:
        print("no live workers")
        return
    for w in workers:
        stats = w.get("stats", {})
        state = "ready" if w.get("ready") else "starting"
        print(f"{w['name']}  {state}  {w['device']}  families: {', '.join(w['families'])}  "
              f"backlog: {w.get('backlog', 0)}  job: {w.get('current_job') or '-'}")
        if len(w.get("batch") or []) > 1:
            print(f"  batch    {', '.join(w['batch'])}")
        for hot in w.get("hot", []):
            print(f"  hot      {hot['checkpoint']}  uses {hot['uses']}  {mib(hot['bytes'])}")
        for name in w.get("loading", []):
            print(f"  loading  {name}")
        if stats:
            print(f"  cache    hits {stats['hits']}  misses {stats['misses']}  evictions {stats['evictions']}  "
                  f"load {stats['load_seconds']:.2f}s  resident {stats['resident_pipelines']} / "
                  f"{mib(stats['resident_bytes'])}")
