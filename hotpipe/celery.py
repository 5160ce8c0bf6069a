"""The Celery app for the ``celery`` command line and Flower: ``celery -A hotpipe …``.

``celery -A hotpipe inspect active`` (or ``stats``, ``registered``, ``control …``, ``events``,
``flower``) finds this module by itself: the ``hotpipe`` package has no ``app`` attribute, so
Celery imports ``hotpipe.celery`` and reads its ``app``.  The app is built from the ``HOTPIPE_*``
settings on that first read, not at import, so importing this module reads nothing; it has the
broker and serializers of the workers' app and no tasks (workers are started with
``hotpipe worker``, never ``celery worker``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery

from hotpipe.shared.celery_app import make_celery
from hotpipe.shared.settings import Settings


@cache
def _cli_app() -> Celery:
    return make_celery(Settings.from_env())


def __getattr__(name: str) -> Any:
    # "celery" too: Celery's -A lookup tries ``app`` and then ``celery``
    if name in ("app", "celery"):
        return _cli_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
