"""``hotpipe workers``' text: one block per worker, with the batch it runs when it runs one."""

from __future__ import annotations

import pytest

from hotpipe.producer.fleet_cli import print_workers

WORKER = {"name": "w@host", "ready": True, "device": "cuda:0", "families": ["stable-diffusion"], "backlog": 0,
          "current_job": "j1", "hot": [], "loading": [], "stats": {}}


def test_a_batch_is_listed_under_its_worker(capsys: pytest.CaptureFixture[str]) -> None:
    print_workers([{**WORKER, "batch": ["j1", "j2", "j3"]}])
    out = capsys.readouterr().out
    assert "job: j1" in out and "  batch    j1, j2, j3" in out


@pytest.mark.parametrize("batch", [None, [], ["j1"]])
def test_a_job_alone_shows_no_batch_line(batch: list[str] | None, capsys: pytest.CaptureFixture[str]) -> None:
    print_workers([{**WORKER, **({} if batch is None else {"batch": batch})}])  # None: an older worker's record
    assert "batch" not in capsys.readouterr().out
