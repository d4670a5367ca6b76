"""Worker types, config.yaml hand edits, logs and concurrency, end to end (SPEC §2, §5, §9, §11)."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from tests.support.images import busybox_layers, config_blob, push_image
from tests.support.projects import make_shell_project
from tests.support.registry import RegistryServer
from tests.support.wait import wait_until


def make_project(root: Path, image: str, name: str, start: str) -> Path:
    return make_shell_project(root, image, name, start=start)


@pytest.fixture(scope="module")
def container_image(registry: RegistryServer) -> str:
    layers = busybox_layers()
    config = config_blob(entrypoint=["/bin/sh", "-c"],
                         cmd=["echo in $PWD as $GREETING; exec sleep 1000"],
                         working_dir="/srv", env=["PATH=/bin", "GREETING=container"],
                         diff_ids=[b.diff_id for b in layers])
    push_image(registry.access, "iii-test/hello", "1", layers, config)
    return f"{registry.host}/iii-test/hello:1"


def test_container_worker_runs_entrypoint_cmd_workdir_env(daemon_factory, container_image: str,
                                                          iii_home: Path) -> None:
    daemon = daemon_factory()
    added = daemon.json("worker", "add", container_image)
    assert added["worker"]["name"] == "hello" and added["worker"]["type"] == "oci"
    assert f"image: {container_image}" in (iii_home / "config.yaml").read_text()
    assert daemon.iii("worker", "start", "hello").returncode == 0
    wait_until(lambda: "in /srv as container" in daemon.iii("worker", "logs", "hello").stdout,
               10, "the container's output")
    assert daemon.worker("hello")["status"] == "running"
    listed = daemon.iii("worker", "list")
    assert "OCI" in listed.stdout


def test_binary_and_config_entries_are_listed_with_their_types(daemon_factory,
                                                               iii_home: Path) -> None:
    (iii_home / "workers").mkdir(parents=True)
    binary = iii_home / "workers" / "tool"
    binary.write_text("#!/bin/sh\necho \"tool as $III_WORKER_NAME ($III_ISOLATION) in $PWD\"\n"
                      "exec sleep 1000\n")
    binary.chmod(0o755)
    (iii_home / "config.yaml").write_text("workers:\n  - name: tool\n  - name: iii-http\n")
    daemon = daemon_factory()
    types = {w["name"]: w["type"] for w in daemon.json("worker", "list")["workers"]}
    assert types == {"tool": "binary", "iii-http": "config"}
    table = daemon.iii("worker", "list").stdout
    assert "Binary" in table and "Config" in table
    # A binary worker is a supervised host process (no sandbox, no isolation).
    started = daemon.json("worker", "start", "tool")
    assert started["status"] == "running" and started["isolation"] is None
    wait_until(lambda: f"tool as tool (none) in {iii_home}/managed/tool"
               in daemon.iii("worker", "logs", "tool").stdout, 10, "the binary's output")
    assert daemon.json("worker", "stop", "tool")["status"] == "stopped"
    assert not os.path.exists(f"/proc/{started['pid']}")


def test_hand_edits_are_reconciled(daemon_factory, engine_factory, busybox_image: str,
                                   iii_home: Path, tmp_path: Path) -> None:
    engine = engine_factory()
    config = iii_home / "config.yaml"
    config.write_text("# hand-written\nworkers: []\n")
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine up")
    project = make_project(tmp_path, busybox_image, "byhand", "echo up; exec sleep 1000")
    config.write_text(f"# hand-written\nworkers:\n  - name: byhand\n    worker_path: {project}\n")
    wait_until(lambda: any(w["name"] == "byhand" and w["status"] == "running"
                           for w in daemon.json("worker", "list")["workers"]), 30,
               "the hand-added worker to start")
    pid = daemon.worker("byhand")["pid"]
    config.write_text("# hand-written\nworkers: []\n")
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 20, "the removed worker to stop")
    assert daemon.json("worker", "list")["workers"] == []


def test_logs_tail_and_follow(daemon_factory, busybox_image: str, tmp_path: Path) -> None:
    daemon = daemon_factory()
    project = make_project(tmp_path, busybox_image, "talker",
                           "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.2; done")
    daemon.json("worker", "add", str(project))
    assert daemon.iii("worker", "start", "talker").returncode == 0
    wait_until(lambda: "line-5" in daemon.iii("worker", "logs", "talker").stdout, 15, "output")
    tail = daemon.json("worker", "logs", "talker", "--tail", "2")["lines"]
    assert len(tail) == 2
    # follow: raw protocol, `log` notifications until we close
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(daemon.socket))
        sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"worker.logs",'
                     b'"params":{"name":"talker","tail":0,"follow":true}}\n')
        reader = sock.makefile("rb")
        seen = []
        while len(seen) < 3:
            msg = json.loads(reader.readline())
            if msg.get("method") == "log":
                seen.append(msg["params"]["line"])
        assert all(line.startswith("line-") for line in seen)


def test_twenty_concurrent_clients_keep_config_valid(daemon_factory, iii_home: Path) -> None:
    (iii_home / "config.yaml").write_text("# top comment\nworkers:  # the list\n  - name: base\n")
    daemon = daemon_factory()
    failures: list[str] = []

    def client(i: int) -> None:
        for round_ in range(3):
            for args in (("worker", "add", f"cfg-{i}"), ("worker", "remove", f"cfg-{i}")):
                result = daemon.iii(*args)
                if result.returncode != 0:
                    failures.append(f"{i}/{round_} {args}: {result.stderr}")
        if daemon.iii("worker", "add", f"cfg-{i}").returncode != 0:
            failures.append(f"{i}: final add")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    text = (iii_home / "config.yaml").read_text()
    assert text.startswith("# top comment\nworkers:  # the list\n")
    names = [w["name"] for w in daemon.json("worker", "list")["workers"]]
    assert sorted(names) == sorted(["base"] + [f"cfg-{i}" for i in range(20)])


def test_events_and_inspect(daemon_factory, busybox_image: str, iii_home: Path,
                            tmp_path: Path) -> None:
    daemon = daemon_factory()
    project = make_project(tmp_path, busybox_image, "watched", "exec sleep 1000")
    daemon.json("worker", "add", str(project))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(daemon.socket))
        sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"events.subscribe"}\n')
        reader = sock.makefile("rb")
        assert json.loads(reader.readline()) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        assert daemon.iii("worker", "start", "watched").returncode == 0
        statuses = []
        while "running" not in statuses:
            event = json.loads(reader.readline())
            assert event["method"] == "event" and event["params"]["worker"] == "watched"
            statuses.append(event["params"]["status"])
        assert statuses[0] == "preparing" and statuses[-1] == "running"
    inspected = daemon.json("worker", "inspect", "watched")
    assert inspected["status"] == "running" and inspected["deps_installed"] is True
    assert inspected["manifest"]["kind"] == "python"
    assert inspected["manifest"]["base_image"] == busybox_image
    assert inspected["manifest"]["scripts"]["start"] == "exec sleep 1000"
    assert inspected["paths"] == {"sandbox": str(iii_home / "managed/watched"),
                                  "logs": str(iii_home / "managed/watched/logs/worker.log")}
