"""``add --force`` / ``--reset-config`` and the ``config:`` entry flattened into env (SPEC §5, §7)."""

from __future__ import annotations

from pathlib import Path

from tests.support.images import TarEntry, busybox_layers, layer_blob, push_image
from tests.support.projects import make_shell_project
from tests.support.registry import RegistryServer
from tests.support.wait import wait_until


def make_project(root: Path, image: str) -> Path:
    return make_shell_project(
        root, image, "cfg", setup="echo setup-ran",
        start="echo greeting=$GREETING db=$DB_HOST/$DB_PORT; exec sleep 1000",
        extra="config:\n  greeting: from-manifest\n")


def test_force_keeps_config_and_reset_config_drops_it(daemon_factory, busybox_image: str,
                                                      iii_home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path, busybox_image)
    daemon = daemon_factory(DB_HOST_SOURCE="db.internal")
    daemon.json("worker", "add", str(project))
    config = iii_home / "config.yaml"
    assert "greeting: from-manifest" in config.read_text()
    # A hand-edited config: nested keys and ${VAR} / ${VAR:default} from the daemon's env.
    config.write_text(config.read_text().replace(
        "greeting: from-manifest",
        "greeting: edited\n      db:\n        host: ${DB_HOST_SOURCE}\n        port: ${DB_PORT:5432}"))
    wait_until(lambda: daemon.iii("worker", "start", "cfg").returncode == 0, 10, "start")
    wait_until(lambda: "greeting=edited db=db.internal/5432"
               in daemon.iii("worker", "logs", "cfg").stdout, 10, "config env")
    marker = iii_home / "managed/cfg/upper/var/.iii-prepared"
    assert marker.exists()

    # --force: the sandbox is rebuilt from scratch (setup runs again), config: is kept.
    (iii_home / "managed/cfg/upper/leftover").write_text("x")
    forced = daemon.json("worker", "add", str(project), "--force")
    assert forced["worker"]["name"] == "cfg"
    assert not (iii_home / "managed/cfg/upper/leftover").exists()
    assert "setup-ran" in daemon.iii("worker", "logs", "cfg").stdout.splitlines()  # its output
    assert "greeting: edited" in config.read_text()

    # --reset-config (with --force): the old config: is dropped for the manifest's.
    assert daemon.iii("worker", "add", str(project), "--reset-config").returncode == 2  # usage
    daemon.json("worker", "add", str(project), "--force", "--reset-config")
    text = config.read_text()
    assert "greeting: from-manifest" in text and "edited" not in text and "DB_HOST" not in text


def test_missing_config_variable_fails_the_start_naming_it(daemon_factory, busybox_image: str,
                                                           iii_home: Path,
                                                           tmp_path: Path) -> None:
    project = make_project(tmp_path, busybox_image)
    daemon = daemon_factory()
    daemon.json("worker", "add", str(project))
    config = iii_home / "config.yaml"
    config.write_text(config.read_text().replace("greeting: from-manifest",
                                                 "greeting: ${NOT_SET_ANYWHERE}"))

    def start_fails() -> bool:
        result = daemon.iii("worker", "start", "cfg")
        return result.returncode == 1 and "NOT_SET_ANYWHERE" in result.stderr
    wait_until(start_fails, 10, "the start to fail naming the variable")
    assert daemon.worker("cfg")["status"] == "stopped"


def test_force_pulls_the_base_image_again(daemon_factory, registry: RegistryServer,
                                          iii_home: Path, tmp_path: Path) -> None:
    # The seed tells users to re-add with --force after updating the base image: the tag now
    # names new content, and the rebuilt sandbox must be made from it, not from the cache.
    def push(version: str) -> str:
        marker = layer_blob([TarEntry("etc", "dir", mode=0o755),
                             TarEntry("etc/image-version", data=version.encode())])
        push_image(registry.access, "iii-test/refreshed", "latest",
                   [*busybox_layers(), marker])
        return f"{registry.host}/iii-test/refreshed:latest"

    image = push("one")
    project = make_shell_project(tmp_path, image, "refreshed",
                                 setup="echo version=$(cat /etc/image-version)",
                                 start="exec sleep 1000")
    daemon = daemon_factory()
    daemon.json("worker", "add", str(project))
    assert "version=one" in daemon.iii("worker", "logs", "refreshed").stdout.splitlines()
    push("two")
    daemon.json("worker", "add", str(project), "--force")
    assert "version=two" in daemon.iii("worker", "logs", "refreshed").stdout.splitlines()


def test_list_says_a_broken_config_shows_the_last_good_state(daemon_factory, iii_home: Path
                                                             ) -> None:
    daemon = daemon_factory()
    daemon.json("worker", "add", "iii-http")
    config = iii_home / "config.yaml"
    good = config.read_text()
    config.write_text(good + "  - name: [broken\n")
    note = "config.yaml is broken"

    def warned() -> bool:
        out = daemon.iii("worker", "list")
        return out.returncode == 0 and note in out.stderr and "iii-http" in out.stdout
    wait_until(warned, 10, "list to say it shows the last good state")
    out = daemon.iii("worker", "list")
    assert out.stderr.startswith("warning: ") and "last good state" in out.stderr
    assert "invalid YAML" in out.stderr or str(config) in out.stderr  # names what is wrong
    assert daemon.json("worker", "list")["config_error"]
    config.write_text(good)
    wait_until(lambda: daemon.iii("worker", "list").stderr == "", 10, "the warning to go")


def test_inspect_of_a_config_worker_shows_no_sandbox_paths(daemon_factory, iii_home: Path
                                                           ) -> None:
    daemon = daemon_factory()
    daemon.json("worker", "add", "iii-http")
    inspected = daemon.json("worker", "inspect", "iii-http")
    assert inspected["type"] == "config" and inspected["paths"] is None
    human = daemon.iii("worker", "inspect", "iii-http")
    assert human.returncode == 0, human.stderr
    assert "managed" not in human.stdout and "sandbox" not in human.stdout
