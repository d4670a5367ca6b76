"""``iii worker init``: a minimal working worker per language, on that language's real iii SDK.

Each template is a manifest plus an entry file and a dependency file that ``iii worker add``
runs unchanged: the worker registers ``<name>::hello`` with the engine named by ``III_URL``
and stops on SIGTERM. Rust has no iii SDK on a registry reachable from here, so its worker uses
the standard library only and says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from client.errors import ScaffoldError

LANGUAGES = ("typescript", "javascript", "bun", "python", "rust")
NODE_SDK = "0.22.1"  # iii-sdk on the npm registry, exact: a new worker installs what was tested
PYTHON_SDK = "iii-sdk==0.25.0"  # iii-sdk on PyPI, exact for the same reason
TSX = "^4.19.0"
TYPESCRIPT = "^5.6.0"


def _manifest(name: str, kind: str, entry: str | None, extra: str = "") -> str:
    entry_line = "" if entry is None else f"  entry: {entry}\n"
    return (f"# An iii worker made by `iii worker init`: `iii worker add .` runs it.\n"
            f"name: {name}\nruntime:\n  kind: {kind}\n{extra}{entry_line}"
            "resources:\n  memory: 512\n  cpus: 1\n")


_NODE_BODY = """const iii = registerWorker(process.env.III_URL ?? 'ws://127.0.0.1:49134', {
  workerName: process.env.III_WORKER_NAME ?? '%(name)s',
})

iii.registerFunction('%(name)s::hello', async (input%(type)s) => {
  return { message: `Hello, ${input?.name ?? 'world'}!` }
})
console.log('%(name)s: registered %(name)s::hello')

const stop = async () => {
  await iii.shutdown()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
"""

_PYTHON = '''"""An iii worker: registers ``%(name)s::hello`` and serves it until SIGTERM."""

import os
import signal
import threading

from iii import register_worker


def hello(data):
    name = data.get("name", "world") if isinstance(data, dict) else "world"
    return {"message": f"Hello, {name}!"}


def main():
    stop = threading.Event()
    connected = False

    def on_signal(*_):
        if not connected:  # still waiting for the engine: nothing to shut down
            os._exit(0)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    iii = register_worker(os.environ.get("III_URL", "ws://127.0.0.1:49134"))
    connected = True
    iii.register_function("%(name)s::hello", hello)
    print("%(name)s: registered %(name)s::hello", flush=True)
    stop.wait()
    iii.shutdown()


if __name__ == "__main__":
    main()
'''

_RUST = """// An iii worker in Rust. No iii SDK crate is reachable from this build's registries, so this
// worker uses the standard library only: it logs where the engine is and runs until SIGTERM
// (the default action of SIGTERM ends it). Swap in the iii Rust SDK where you have it.
use std::{env, thread, time::Duration};

fn main() {
    let url = env::var("III_URL").unwrap_or_else(|_| "ws://127.0.0.1:49134".to_string());
    println!("%(name)s: running; engine at {url}");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
"""


def _package_json(name: str, *, typescript: bool) -> str:
    doc: dict[str, object] = {"name": name, "version": "0.1.0", "private": True,
                              "type": "module", "dependencies": {"iii-sdk": NODE_SDK}}
    if typescript:
        doc["devDependencies"] = {"tsx": TSX, "typescript": TYPESCRIPT}
    return json.dumps(doc, indent=2) + "\n"


def template(name: str, language: str) -> dict[str, str]:
    """The files of a new ``language`` worker called ``name``: {relative path: content}."""
    node = _NODE_BODY % {"name": name, "type": ": { name?: string } | undefined"}
    plain = _NODE_BODY % {"name": name, "type": ""}
    imports = "import { registerWorker } from 'iii-sdk'\n\n"
    if language == "typescript":
        return {"iii.worker.yaml": _manifest(name, "typescript", "src/index.ts",
                                             "  package_manager: npm\n"),
                "package.json": _package_json(name, typescript=True),
                "src/index.ts": imports + node, ".gitignore": "node_modules/\n"}
    if language == "javascript":
        return {"iii.worker.yaml": _manifest(name, "javascript", "src/index.js",
                                             "  package_manager: npm\n"),
                "package.json": _package_json(name, typescript=False),
                "src/index.js": imports + plain, ".gitignore": "node_modules/\n"}
    if language == "bun":
        return {"iii.worker.yaml": _manifest(name, "bun", "src/index.ts"),
                "package.json": _package_json(name, typescript=False),
                "src/index.ts": imports + node, ".gitignore": "node_modules/\n"}
    if language == "python":
        return {"iii.worker.yaml": _manifest(name, "python", "worker.py"),
                "requirements.txt": PYTHON_SDK + "\n", "worker.py": _PYTHON % {"name": name},
                ".gitignore": "__pycache__/\n.venv/\n"}
    if language == "rust":
        crate = name.replace(".", "-")
        return {"iii.worker.yaml": _manifest(name, "rust", None),
                "Cargo.toml": (f'[package]\nname = "{crate}"\nversion = "0.1.0"\n'
                               'edition = "2021"\n\n[dependencies]\n'),
                "src/main.rs": _RUST % {"name": name}, ".gitignore": "target/\n"}
    raise ScaffoldError(f"unknown language {language!r}: use one of {', '.join(LANGUAGES)}")


def write_worker(directory: Path, name: str, language: str, *, force: bool = False
                 ) -> list[Path]:
    """Write the template into ``directory`` (created when missing); return the files.

    Raises ``ScaffoldError`` for a non-empty directory without ``force``, a path that is not a
    directory, or an unknown language. Files are written whole (temp file, then rename).
    """
    files = template(name, language)
    if directory.exists() and not directory.is_dir():
        raise ScaffoldError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise ScaffoldError(f"{directory} is not empty: use another directory, or --force to "
                            "write the worker's files into it (files of the same name are "
                            "replaced)")
    written = []
    for rel, content in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.iii-tmp")
        tmp.write_text(content)
        os.replace(tmp, path)
        written.append(path)
    return written
