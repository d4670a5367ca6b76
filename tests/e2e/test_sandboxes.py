"""Ephemeral sandboxes (``sandbox.*`` on the socket) against the real daemon, the real registry
and real namespace sandboxes: lifecycle, fs, limits, bad input, isolation, cleanup."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.errors import RpcError
from client.rpc_client import RpcClient
from tests.support.daemon import DaemonProcess
from tests.support.wait import wait_until


def sandbox_yaml(python_image: str, busybox_image: str, **extra: Any) -> str:
    """daemon.yaml with a ``sandboxes:`` section (each value written as JSON, which is YAML)."""
    # no pool unless a test asks: the tests count sandbox directories exactly
    policy = {"catalog": {"python": python_image, "shell": busybox_image},
              "warm_pool_after_use": 0, **extra}
    return "sandboxes:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in policy.items())


class Api:
    """``sandbox.*`` calls on the daemon's socket."""

    def __init__(self, socket: Path, daemon: DaemonProcess | None = None) -> None:
        self.socket = socket
        self.daemon = daemon

    def __call__(self, method: str, **params: Any) -> Any:
        with RpcClient(self.socket, autostart=False) as client:
            return client.call(f"sandbox.{method}", params)

    def fails(self, method: str, **params: Any) -> dict[str, Any]:
        with pytest.raises(RpcError) as info:
            self(method, **params)
        data = info.value.data
        assert isinstance(data, dict), info.value
        return data


@pytest.fixture
def sandbox_api(daemon_factory: Callable[..., DaemonProcess], iii_home: Path, python_image: str,
                busybox_image: str) -> Iterator[Callable[..., Api]]:
    def start(**policy: Any) -> Api:
        (iii_home / "daemon.yaml").write_text(sandbox_yaml(python_image, busybox_image,
                                                           **policy))
        daemon = daemon_factory()
        return Api(daemon.socket, daemon)
    yield start


def sandbox_dirs(home: Path) -> list[str]:
    managed = home / "sandboxes" / "managed"
    return sorted(n for n in os.listdir(managed) if not n.startswith(".")) \
        if managed.is_dir() else []  # dot-names: probes and removals in progress


def test_create_write_exec_read_stop(sandbox_api: Callable[..., Api], iii_home: Path) -> None:
    api = sandbox_api()
    sid = api("create", image="python")["sandbox_id"]
    assert api("fs.write", sandbox_id=sid, path="/work/main.py", parents=True,
               content="import sys\nprint(sys.stdin.read().upper())\n")["bytes_written"] == 43
    out = api("exec", sandbox_id=sid, cmd="python3 /work/main.py",
              stdin=base64.b64encode(b"hello").decode())
    assert (out["stdout"], out["exit_code"], out["success"]) == ("HELLO\n", 0, True)
    assert api("exec", sandbox_id=sid, argv=["sh", "-c", "echo made > /work/out.txt"])[
        "exit_code"] == 0
    assert api("fs.read", sandbox_id=sid, path="/work/out.txt")["body"] == "made\n"
    listed = api("list")["sandboxes"]
    assert [(s["sandbox_id"], s["image"], s["exec_slots_free"]) for s in listed] == \
        [(sid, "python", 4)]
    assert sandbox_dirs(iii_home) == [sid]
    assert api("stop", sandbox_id=sid, wait=True) == {"sandbox_id": sid, "stopped": True}
    assert api("list")["sandboxes"] == []
    assert sandbox_dirs(iii_home) == []
    error = api.fails("exec", sandbox_id=sid, cmd="true")
    assert error["code"] == "S002" and error["type"] == "validation"


def test_paths_cannot_leave_the_sandbox(sandbox_api: Callable[..., Api], iii_home: Path,
                                        tmp_path: Path) -> None:
    api = sandbox_api()
    sid = api("create", image="shell")["sandbox_id"]
    host_file = tmp_path / "host-secret"
    host_file.write_text("host\n")
    # `..` past the root stays at the sandbox's root: this writes the sandbox's /tmp/x
    escape = "/../../../../.." + str(tmp_path) + "/escaped"
    error = api.fails("fs.write", sandbox_id=sid, path=escape, content="x")
    assert error["code"] == "S211" and error["fix"] == {"parents": True}
    api("fs.write", sandbox_id=sid, path=escape, content="x", parents=True)
    assert not (tmp_path / "escaped").exists()
    assert api("fs.read", sandbox_id=sid, path=str(tmp_path) + "/escaped")["body"] == "x"
    # a symlink to the host path resolves in the sandbox, never on the host
    api("exec", sandbox_id=sid, argv=["ln", "-s", str(tmp_path), "/link"])
    api("fs.write", sandbox_id=sid, path="/link/host-secret", content="clobbered")
    assert host_file.read_text() == "host\n"
    assert api.fails("fs.read", sandbox_id=sid, path="/etc/../../host-passwd")["code"] == "S211"
    assert "root:" in api("fs.read", sandbox_id=sid, path="/../../etc/passwd")["body"]
    # rm of / is refused; mv and grep stay inside too
    assert api.fails("fs.rm", sandbox_id=sid, path="/..", recursive=True)["code"] == "S210"
    assert host_file.read_text() == "host\n"


def test_bad_input_gives_structured_errors_and_touches_nothing(
        sandbox_api: Callable[..., Api], iii_home: Path) -> None:
    api = sandbox_api()
    unknown = api.fails("create", image="cobol")
    assert unknown["code"] == "S100" and "'python'" in unknown["message"]
    assert api.fails("create", image="docker.io/library/alpine:3")["code"] == "S100"
    lang = api.fails("run", image="shell", code="x", lang="cobol")
    assert lang["code"] == "S001" and "unknown lang" in lang["message"]
    assert sandbox_dirs(iii_home) == []  # nothing was booted for a refused request
    sid = api("create", image="shell")["sandbox_id"]
    big = api.fails("fs.write", sandbox_id=sid, path="/big",
                    content_b64=base64.b64encode(b"\0" * (9 << 20)).decode())
    assert big["code"] == "S210" and "max_file_bytes" in big["message"]
    assert api.fails("fs.stat", sandbox_id=sid, path="/big")["code"] == "S211"
    assert api.fails("fs.write", sandbox_id=sid, path="/b", content_b64="%%%")["code"] == "S001"
    assert api.fails("fs.write", sandbox_id=sid, path="/b")["code"] == "S210"
    binary = bytes(range(256)) * 4
    api("fs.write", sandbox_id=sid, path="/bin.dat", content_b64=base64.b64encode(binary).decode())
    read = api("fs.read", sandbox_id=sid, path="/bin.dat")
    assert "body" not in read and base64.b64decode(read["body_b64"]) == binary
    assert api.fails("fs.read", sandbox_id=sid, path="/etc")["code"] == "S212"
    assert api.fails("fs.grep", sandbox_id=sid, path="/etc", pattern="(")["code"] == "S217"
    assert api.fails("exec", sandbox_id=sid, cmd="echo 'unbalanced")["code"] == "S001"
    assert api.fails("exec", sandbox_id=sid, cmd="echo x", args=["y"])["code"] == "S001"
    assert api.fails("exec", sandbox_id=sid, cmd="true", env={"1BAD": "x"})["code"] == "S001"
    missing = api("exec", sandbox_id=sid, argv=["no-such-binary"])
    assert missing["exit_code"] == 127 and "no-such-binary" in missing["stderr"]


def test_fs_operations(sandbox_api: Callable[..., Api]) -> None:
    api = sandbox_api()
    sid = api("create", image="shell")["sandbox_id"]
    assert api("fs.mkdir", sandbox_id=sid, path="/w/src", parents=True) == {"created": True}
    assert api.fails("fs.mkdir", sandbox_id=sid, path="/w/src")["code"] == "S213"
    api("fs.write", sandbox_id=sid, path="/w/src/a.txt", content="alpha\nbeta\nalpha beta\n")
    api("fs.write", sandbox_id=sid, path="/w/src/b.md", content="alpha\n", mode="0600")
    names = [e["name"] for e in api("fs.ls", sandbox_id=sid, path="/w/src")["entries"]]
    assert names == ["a.txt", "b.md"]
    stat = api("fs.stat", sandbox_id=sid, path="/w/src/b.md")
    assert (stat["name"], stat["mode"], stat["size"], stat["is_dir"]) == ("b.md", "0600", 6, False)
    grep = api("fs.grep", sandbox_id=sid, path="/w", pattern="^alpha", include_glob=["*.txt"])
    assert [(m["path"], m["line"]) for m in grep["matches"]] == [("/w/src/a.txt", 1),
                                                               ("/w/src/a.txt", 3)]
    sed = api("fs.sed", sandbox_id=sid, path="/w", pattern="alpha", replacement="omega")
    assert sed["total_replacements"] == 3
    assert api("fs.read", sandbox_id=sid, path="/w/src/b.md")["body"] == "omega\n"
    assert api.fails("fs.sed", sandbox_id=sid, pattern="a", replacement="b")["code"] == "S210"
    assert api("fs.chmod", sandbox_id=sid, path="/w", mode="0700", recursive=True)[
        "updated"] == 4
    assert api.fails("fs.mv", sandbox_id=sid, src="/w/src/a.txt", dst="/w/src/b.md")[
        "code"] == "S213"
    assert api("fs.mv", sandbox_id=sid, src="/w/src/a.txt", dst="/w/a.txt") == {"moved": True}
    assert api.fails("fs.rm", sandbox_id=sid, path="/w")["code"] == "S214"
    assert api("fs.rm", sandbox_id=sid, path="/w", recursive=True) == {"removed": True}
    assert api.fails("fs.ls", sandbox_id=sid, path="/w")["code"] == "S211"
    owner = api("exec", sandbox_id=sid, cmd="stat -c %u:%g /tmp")["stdout"]
    assert owner.strip() == "0:0"  # the sandbox's root, whatever the host ids are


def test_limits_give_upstream_errors(sandbox_api: Callable[..., Api], iii_home: Path) -> None:
    api = sandbox_api()
    ids = [api("create", image="shell")["sandbox_id"] for _ in range(32)]
    over = api.fails("create", image="shell")
    assert over["code"] == "S400" and "max_concurrent_sandboxes (32)" in over["message"]
    assert len(sandbox_dirs(iii_home)) == 32
    for sid in ids[1:]:
        api("stop", sandbox_id=sid)
    sid = ids[0]
    timed = api.fails("exec", sandbox_id=sid, cmd="sleep 30", timeout_ms=300)
    assert timed["code"] == "S200" and timed["type"] == "execution"
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        slow = [pool.submit(api, "exec", sandbox_id=sid, cmd="sleep 3") for _ in range(4)]
        wait_until(lambda: api("list")["sandboxes"][0]["exec_in_flight"] == 4, 10,
                   "four execs in flight")
        fifth = api.fails("exec", sandbox_id=sid, cmd="true")
        assert fifth["code"] == "S003" and api("list")["sandboxes"][0]["exec_slots_free"] == 0
        assert [f.result()["exit_code"] for f in slow] == [0, 0, 0, 0]
    wait_until(lambda: sandbox_dirs(iii_home) == [sid], 20, "stopped sandboxes deleted")


def test_sandboxes_cannot_see_each_other(sandbox_api: Callable[..., Api]) -> None:
    api = sandbox_api()
    one, two = (api("create", image="shell")["sandbox_id"] for _ in range(2))
    api("fs.write", sandbox_id=one, path="/tmp/mine", content="one")
    api("exec", sandbox_id=one, argv=["sh", "-c", "sleep 1000 > /dev/null 2>&1 &"])
    assert api.fails("fs.read", sandbox_id=two, path="/tmp/mine")["code"] == "S211"
    procs = api("exec", sandbox_id=two, cmd="ps -o comm")["stdout"].split()
    assert "sleep" in procs  # its own idle init workload only...
    assert procs.count("sleep") == 1  # ...not the other sandbox's background sleep
    assert api("exec", sandbox_id=one, cmd="ps -o comm")["stdout"].split().count("sleep") == 2
    nets = api("exec", sandbox_id=two, cmd="cat /proc/net/dev")["stdout"]
    assert "lo:" in nets and "eth0" not in nets  # no network unless asked


def test_idle_sandboxes_are_reaped(sandbox_api: Callable[..., Api], iii_home: Path) -> None:
    api = sandbox_api(default_idle_timeout_secs=1)
    sid = api("create", image="shell")["sandbox_id"]
    wait_until(lambda: api("list")["sandboxes"] == [], 15, "the idle sandbox to be reaped")
    wait_until(lambda: sandbox_dirs(iii_home) == [], 10, "its directory to be deleted")
    assert api.fails("exec", sandbox_id=sid, cmd="true")["code"] == "S002"


def recorded_pids(home: Path, sid: str) -> list[int]:
    """The launcher and sandbox init ``launcher.pid`` names for one sandbox."""
    record = json.loads((home / "sandboxes/managed" / sid / "launcher.pid").read_text())
    return [record["pid"], record["sandbox_pid"]]


def test_a_killed_daemon_leaves_nothing_after_restart(
        daemon_factory: Callable[..., DaemonProcess], iii_home: Path, python_image: str,
        busybox_image: str) -> None:
    (iii_home / "daemon.yaml").write_text(sandbox_yaml(python_image, busybox_image))
    daemon = daemon_factory()
    api = Api(daemon.socket)
    ids = [api("create", image="shell")["sandbox_id"] for _ in range(3)]
    pids = [pid for sid in ids for pid in recorded_pids(iii_home, sid)]
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    daemon.kill9()
    # the launchers die with the daemon (its launcher zygote, then each launcher: PDEATHSIG)
    wait_until(lambda: all(_zombie(pid) for pid in pids), 10, "the sandboxes to end")
    daemon.start()
    assert sandbox_dirs(iii_home) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(iii_home / "sandboxes") not in mounts
    assert Api(daemon.socket)("list")["sandboxes"] == []
    # a daemon that shuts down stops its sandboxes itself
    sid = Api(daemon.socket)("create", image="shell")["sandbox_id"]
    pids = recorded_pids(iii_home, sid)
    daemon.stop()
    assert sandbox_dirs(iii_home) == [] and all(_zombie(pid) for pid in pids)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_run_keeps_or_discards_its_sandbox(sandbox_api: Callable[..., Api],
                                           iii_home: Path) -> None:
    api = sandbox_api()
    kept = api("run", image="shell", lang="shell", code="echo $GREETING > /tmp/g; cat /tmp/g",
               env=["GREETING=kept"], keep_sandbox=True)
    assert kept["stdout"] == "kept\n" and sandbox_dirs(iii_home) == [kept["sandbox_id"]]
    assert api("fs.read", sandbox_id=kept["sandbox_id"], path="/tmp/g")["body"] == "kept\n"
    failed = api.fails("run", image="shell", lang="shell", code="sleep 30", timeout_ms=300)
    assert failed["code"] == "S200" and failed["fix"]["context"] == "during sandbox::run step `exec`"
    wait_until(lambda: sandbox_dirs(iii_home) == [kept["sandbox_id"]], 10,
               "the failed run's sandbox to be deleted")


def test_warm_pool_hands_out_booted_sandboxes(sandbox_api: Callable[..., Api],
                                              iii_home: Path) -> None:
    api = sandbox_api(warm_pool={"shell": 2})
    assert api.daemon is not None
    wait_until(lambda: "warm pool: 2 shell sandbox(es) ready" in api.daemon.log, 30,
               "the pool to boot two sandboxes")
    pooled = set(sandbox_dirs(iii_home))
    assert api("list")["sandboxes"] == []  # pooled sandboxes are nobody's yet
    sid = api("create", image="shell", env={"WHO": "claimer"})["sandbox_id"]
    assert sid in pooled
    assert api("exec", sandbox_id=sid, cmd="sh -c 'echo $WHO'")["stdout"] == "claimer\n"
    wait_until(lambda: api.daemon.log.count("warm pool: 2 shell") == 2, 30, "the pool to refill")
    assert len(sandbox_dirs(iii_home)) == 3
    own = api("create", image="shell", memory_mb=256)["sandbox_id"]  # not the pool's shape
    assert own not in pooled


def test_limits_are_enforced_and_network_is_opt_in(sandbox_api: Callable[..., Api],
                                                   iii_home: Path) -> None:
    api = sandbox_api()
    sid = api("create", image="python", memory_mb=64)["sandbox_id"]
    record = json.loads((iii_home / "sandboxes/managed" / sid / "launcher.pid").read_text())
    assert record["launch"]["network"] == "none"
    if not record["launch"]["limits"].startswith("enforced"):
        pytest.skip(f"resource limits are not enforced here: {record['launch']['limits']}")
    hog = api("exec", sandbox_id=sid, argv=["python3", "-c", "b = bytearray(256 << 20)"])
    assert hog["exit_code"] == 137 and not hog["success"], hog  # the OOM killer, in its cgroup
    assert api("exec", sandbox_id=sid, argv=["python3", "-c", "print(1)"])["stdout"] == "1\n"
    online = api("create", image="shell", network=True)["sandbox_id"]
    record = json.loads((iii_home / "sandboxes/managed" / online / "launcher.pid").read_text())
    assert record["launch"]["network"] in ("bridge", "pasta", "slirp4netns", "host")
    devices = api("exec", sandbox_id=online, cmd="cat /proc/net/dev")["stdout"]
    assert len([ln for ln in devices.splitlines() if ":" in ln]) >= 2  # lo and a way out


def test_a_used_image_is_kept_warm(sandbox_api: Callable[..., Api], iii_home: Path) -> None:
    api = sandbox_api(warm_pool_after_use=1)
    first = api("create", image="shell")["sandbox_id"]
    assert api.daemon is not None
    wait_until(lambda: "warm pool: 1 shell sandbox(es) ready" in api.daemon.log, 30,
               "a warm sandbox after the first use")
    spare = set(sandbox_dirs(iii_home)) - {first}
    assert len(spare) == 1 and api("create", image="shell")["sandbox_id"] in spare
    assert "python" not in api.daemon.log  # nothing of an image nobody asked for


def test_a_shutdown_while_the_pool_fills_ends_cleanly(sandbox_api: Callable[..., Api],
                                                     iii_home: Path) -> None:
    # A new daemon starts filling its pool at once (sixteen boots, one after another through
    # its launcher zygote): it is stopped in the middle of that, and must neither hang nor
    # leave a sandbox behind.
    api = sandbox_api(warm_pool={"shell": 16})
    assert api.daemon is not None and api.daemon.proc is not None
    wait_until(lambda: len(sandbox_dirs(iii_home)) >= 2, 30, "the pool to be filling")
    api.daemon.stop()  # SIGTERM; a daemon still there after 60 s is killed
    assert api.daemon.proc.returncode == 0, api.daemon.log[-2000:]
    assert sandbox_dirs(iii_home) == []
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit()
                and str(iii_home).encode() in _cmdline(int(pid))]


def test_undecodable_socket_requests_carry_the_payload_too(sandbox_api: Callable[..., Api]
                                                           ) -> None:
    api = sandbox_api()
    assert api.fails("exec", cmd="true")["code"] == "S001"  # no sandbox_id
    fs = api.fails("fs.read", sandbox_id="x", path="/a", bogus=1)
    assert fs["code"] == "S210" and "bogus" in fs["message"]


def test_a_dead_launcher_zygote_is_started_again(sandbox_api: Callable[..., Api]) -> None:
    api = sandbox_api()
    first = api("create", image="shell")["sandbox_id"]
    assert api.daemon is not None and api.daemon.proc is not None
    zygotes = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_is(
        int(p), api.daemon.proc.pid) and b"vmm_ffi.launcher.zygote" in _cmdline(int(p))]
    assert len(zygotes) == 1
    os.kill(zygotes[0], 9)
    # a zygote killed outright cannot take its launchers along: the sandbox lives on...
    assert api("exec", sandbox_id=first, cmd="echo still")["stdout"] == "still\n"
    # ...the next create starts a new zygote, and stops work for both
    second = api("create", image="shell")["sandbox_id"]
    assert api("exec", sandbox_id=second, cmd="echo ok")["stdout"] == "ok\n"
    for sid in (first, second):
        api("stop", sandbox_id=sid, wait=True)
    assert sandbox_dirs(api.daemon.home) == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _parent_is(pid: int, parent: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == parent
