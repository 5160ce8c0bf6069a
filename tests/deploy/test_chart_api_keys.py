"""API keys in the chart: the hashed key file from an existing Secret or one made from values,
mounted read-only in the API pods only, named by HOTPIPE_API_KEYS_FILE; NOTES warns without keys.
The file the chart writes is read by the API's own key parser."""

from __future__ import annotations

import base64
import posixpath
from typing import Any

from hotpipe.producer.auth import hash_key, new_key, parse_keys
from tests.deploy.chart import Manifest, component, env_values, of_kind, only_container, render, render_files

KEY = new_key()
ENTRIES = [{"sha256": hash_key(KEY), "tenant": "acme"}, {"sha256": hash_key(new_key()), "tenant": "globex"}]


def api_pod(docs: list[Manifest]) -> dict[str, Any]:
    (deployment,) = component(docs, "Deployment", "api")
    pod: dict[str, Any] = deployment["spec"]["template"]
    return pod


def key_file(docs: list[Manifest]) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(HOTPIPE_API_KEYS_FILE, the mount's directory, the mount, the secret volume) of the API pod."""
    pod = api_pod(docs)
    container = only_container({"spec": {"template": pod}})
    path = env_values(container)["HOTPIPE_API_KEYS_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-keys"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "api-keys"]
    return path, mount["mountPath"], mount, volume["secret"]


def notes(values: dict[str, Any] | None) -> str:
    return render_files(values)["hotpipe/templates/NOTES.txt"]


def test_an_existing_secret_is_mounted_read_only_as_the_key_file() -> None:
    docs = render({"apiKeys": {"existingSecret": "tenant-keys", "secretKey": "keys.txt"}})
    path, directory, mount, secret = key_file(docs)

    assert mount["readOnly"] is True
    assert posixpath.dirname(path) == directory and posixpath.basename(path) == "keys.txt"
    assert secret["secretName"] == "tenant-keys"
    assert secret["items"] == [{"key": "keys.txt", "path": "keys.txt"}]
    assert secret["defaultMode"] & 0o222 == 0  # nobody may write it
    assert not of_kind(docs, "Secret"), "an existing Secret is the operator's; the chart makes none"


def test_entries_make_a_secret_of_hashes_that_the_api_parses() -> None:
    docs = render({"apiKeys": {"entries": ENTRIES}})
    path, _, _, secret = key_file(docs)
    (made,) = of_kind(docs, "Secret")

    assert secret["secretName"] == made["metadata"]["name"] == "hp-hotpipe-api-keys"
    text = made.get("stringData", {}).get(posixpath.basename(path))
    if text is None:
        text = base64.b64decode(made["data"][posixpath.basename(path)]).decode()
    assert parse_keys(text, "the chart's Secret") == {e["sha256"]: e["tenant"] for e in ENTRIES}
    assert KEY not in str(docs)
    checksum = api_pod(docs)["metadata"]["annotations"]["checksum/api-keys"]
    other = render({"apiKeys": {"entries": ENTRIES[:1]}})
    assert api_pod(other)["metadata"]["annotations"]["checksum/api-keys"] != checksum, "new keys roll the pods"


def test_only_the_api_gets_the_keys() -> None:
    docs = render({"apiKeys": {"entries": ENTRIES}})
    for worker in component(docs, "Deployment", "worker"):
        container = only_container(worker)
        assert "HOTPIPE_API_KEYS_FILE" not in env_values(container)
        assert all(v["name"] != "api-keys" for v in worker["spec"]["template"]["spec"].get("volumes", []))


def test_without_keys_nothing_is_mounted_and_the_notes_warn() -> None:
    docs = render()
    container = only_container({"spec": {"template": api_pod(docs)}})
    assert "HOTPIPE_API_KEYS_FILE" not in env_values(container)
    assert all(m["name"] != "api-keys" for m in container["volumeMounts"])
    assert not of_kind(docs, "Secret")
    assert "WARNING: NO API KEYS CONFIGURED" in notes(None)


def test_with_keys_the_notes_say_how_the_cli_sends_one() -> None:
    for values in ({"apiKeys": {"entries": ENTRIES}}, {"apiKeys": {"existingSecret": "tenant-keys"}},
                   {"settings": {"api_keys": f"{hash_key(KEY)}:acme"}},
                   {"api": {"env": [{"name": "HOTPIPE_API_KEYS_FILE", "value": "/elsewhere"}]}}):
        text = notes(values)
        assert "NO API KEYS CONFIGURED" not in text, values
        assert "HOTPIPE_API_KEY" in text and "--api-key" in text, values
    assert "tenant-keys: api-keys" in notes({"apiKeys": {"existingSecret": "tenant-keys"}})
