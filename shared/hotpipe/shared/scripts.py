"""The Redis scripts: one ``.lua`` file each in ``lua/``, every one behind the same prelude.

A script's text is the transition table (generated here from ``status.ALLOWED_FROM``), then
``lua/prelude.lua`` (Redis's clock, the table's guard ``move``, the job helpers), then the
script's own file.  Scripts are registered once per client or store and run by SHA: redis-py's
``Script`` sends EVALSHA and loads the text on the first NOSCRIPT.

Job scripts share one KEYS layout (``job_keys``, documented in the prelude): the job, its
channel, and the sets its helpers keep, then the script's own keys.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

from hotpipe.shared import keys
from hotpipe.shared.status import ALLOWED_FROM, Status

#: the prelude every script starts with (after the generated transition table)
PRELUDE = "prelude"


def transition_table() -> str:
    """``status.ALLOWED_FROM`` as the Lua table ``ALLOWED``: ``ALLOWED[from][to]`` is true when allowed."""
    rows = []
    for source in Status:
        targets = sorted(target.value for target, sources in ALLOWED_FROM.items() if source in sources)
        rows.append(f"['{source.value}'] = {{{', '.join(f'[{t!r}] = true' for t in targets)}}}")
    return "local ALLOWED = {" + ", ".join(rows) + "}\n"


def _read(name: str) -> str:
    text = resources.files("hotpipe.shared").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    # Whole-line comments stay in the files only: the text goes to Redis on every (re)load.
    return "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("--"))


@cache
def source(name: str) -> str:
    """The whole text of script ``name`` (``lua/{name}.lua``): table, prelude, then the script."""
    return transition_table() + _read(PRELUDE) + _read(name)


def names() -> list[str]:
    """Every script's name (the ``.lua`` files but the prelude)."""
    folder = resources.files("hotpipe.shared").joinpath("lua")
    return sorted(f.name.removesuffix(".lua") for f in folder.iterdir()
                  if f.name.endswith(".lua") and f.name != f"{PRELUDE}.lua")


def register(client: redis.Redis, name: str) -> Script:
    """Script ``name`` on ``client``, run by SHA (loaded on the first NOSCRIPT)."""
    return client.register_script(source(name))


def job_keys(job_id: str, *own: str) -> list[str]:
    """KEYS of a job script: the prelude's six (job, channel, queued jobs, index expiry, webhook due,
    webhook events), then the script's ``own``."""
    return [keys.job(job_id), keys.job_events(job_id), keys.queued_jobs(), keys.index_expiry(),
            keys.webhook_due(), keys.webhook_events(), *own]


class JobScripts:
    """The job store's scripts, registered once per store."""

    def __init__(self, client: redis.Redis):
        self.create = register(client, "create")
        self.transition = register(client, "transition")
        self.progress = register(client, "progress")
        self.cancel = register(client, "cancel")
        self.renew = register(client, "renew")
        self.requeue = register(client, "requeue")
        self.published = register(client, "published")
        self.orphan = register(client, "orphan")
        self.due = register(client, "due")
        self.stage = register(client, "stage")
        self.expire_queued = register(client, "expire_queued")
        self.prune = register(client, "prune")
        self.forget = register(client, "forget")
        self.touch_queued = register(client, "touch_queued")
