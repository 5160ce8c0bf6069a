"""The configuration reference, generated from the settings model so it can't drift from it.

``python -m hotpipe.config_reference [PATH]`` writes it (default ``docs/configuration.md``, ``-``
prints it) and brings the Helm chart's list of settings (``values.schema.json``) into the
model's order; tests fail when either committed file differs from what this renders.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from hotpipe.shared.settings import Settings, reference_table

DEFAULT_PATH = Path("docs/configuration.md")
CHART_SCHEMA = Path(__file__).resolve().parent.parent / "helm" / "hotpipe" / "values.schema.json"
HEADER = """\
# Configuration

Every hotpipe process reads its settings from `HOTPIPE_*` environment variables; AWS credentials
come through boto3's usual chain (`AWS_ACCESS_KEY_ID`, a profile, an instance or pod role).
Set only what you change: an unset variable keeps its default, and an empty one unsets an optional
setting. In the Helm chart, `settings` takes these by name (`s3_bucket: my-bucket`); the chart
itself sets `HOTPIPE_REDIS_URL` and `HOTPIPE_S3_ENDPOINT_URL` from Secrets,
`HOTPIPE_API_KEYS_FILE` from `apiKeys` (a Secret of key hashes, mounted read-only) and
`HOTPIPE_DEVICE`, `HOTPIPE_DTYPE`, `HOTPIPE_WORKER_READY_FILE` and `HOTPIPE_SHUTDOWN_GRACE_S` per
worker pool.

Generated from `shared/hotpipe/shared/settings.py` by `python -m hotpipe.config_reference` (`make docs`);
do not edit by hand.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    return f"`{value}`" if str(value) else '`""`'


def render() -> str:
    """The reference as Markdown: one row per setting, in the order of the settings model."""
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for f, (var, _, meaning) in zip(dataclasses.fields(Settings), reference_table(), strict=True):
        rows.append(f"| `{var}` | {_cell(str(f.type))} | {_default(f.default)} | {_cell(meaning)} |")
    return HEADER + "\n" + "\n".join(rows) + "\n"


def sync_chart_schema(path: Path = CHART_SCHEMA) -> bool:
    """Set the chart's ``settings`` names to the settings model's fields, in order; True if it changed."""
    text = path.read_text()
    schema = json.loads(text)
    schema["properties"]["settings"]["propertyNames"]["enum"] = [f.name for f in dataclasses.fields(Settings)]
    rendered = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    if rendered != text:
        path.write_text(rendered)
    return rendered != text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else str(DEFAULT_PATH)
    if target == "-":
        sys.stdout.write(render())
        return 0
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    print(path)
    if CHART_SCHEMA.exists() and sync_chart_schema():
        print(CHART_SCHEMA)
    return 0


if __name__ == "__main__":
    sys.exit(main())
