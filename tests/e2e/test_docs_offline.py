"""``/docs`` and ``/redoc`` render with no network: headless Chromium, every other host unreachable.

The API runs as a real process; Chromium (Debian's ``chromium``) may resolve nothing but
127.0.0.1, so a page that still loaded Swagger UI or ReDoc from a CDN would render empty.  Each
page is rendered, its DOM dumped and searched for the API's operations, and a screenshot taken
and checked to hold more than a blank page.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageStat

from hotpipe.devstack import LOCAL_AWS_ENV, start_api
from hotpipe.shared.settings import Settings

pytestmark = pytest.mark.e2e

#: summaries FastAPI gives the operations (from the route functions' names), shown by both pages
OPERATIONS = ("Submit Job", "List Jobs", "Get Job", "Cancel Job", "Upload", "List Workers")
#: Chromium run as the brief for these checks says: no sandbox (root in CI), no background traffic
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars",
         # nothing but loopback resolves: a CDN asset would fail to load
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000"]


@pytest.fixture(scope="module")
def api_url(redis_server: str, s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings.from_env({}, redis_url=redis_server, s3_endpoint_url=s3_server, s3_bucket="hotpipe-docs")
    proc, url = start_api(tmp_path_factory.mktemp("docs-api"), {**LOCAL_AWS_ENV, **settings.to_env()})
    try:
        yield url
    finally:
        proc.stop()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed: apt-get install -y chromium (.ci/run installs it)"
    return found


def render(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True,
                          text=True, timeout=180)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_render_offline(api_url: str, page: str, tmp_path: Path) -> None:
    html = httpx.get(api_url + page, timeout=10).text
    assert "cdn" not in html.lower() and "https://" not in html, html
    dom = render(api_url + page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    missing = [op for op in OPERATIONS if op not in dom.stdout]
    assert not missing, (missing, dom.stdout[-3000:])
    shot = tmp_path / "page.png"
    done = render(api_url + page, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as image:
        spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 10, f"{page} screenshot looks blank (grey-level spread {spread:.1f})"
