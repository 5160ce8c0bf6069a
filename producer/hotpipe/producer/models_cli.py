"""``hotpipe models``: the catalog, one line per model (or JSON)."""

from __future__ import annotations

import json
from typing import Any


def print_models(models: list[dict[str, Any]], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"object": "list", "data": models}))
        return
    if not models:
        print("no models under the model root")
        return
    width = max(len(m["id"]) for m in models)
    for m in models:
        if m["kind"] == "checkpoint":
            what = ", ".join(m.get("tasks", [])) or f"runs nothing: {m.get('error', '?')}"
        else:
            what = f"fits {m.get('family') or '?'}"
        print(f"{m['id']:<{width}}  {m['kind']:<10}  {m.get('family') or '-':<22}  {what}")
