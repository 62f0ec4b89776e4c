"""``mamba4net data``: the shipped manifests match the shared data; fetch fills an empty folder from
a loopback mirror, resumes a cut download, repairs only what is altered, and never replaces a file
with a download that does not match the manifest."""

import hashlib
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mamba4net.core.cli import main
from mamba4net.core.datasets import DataFile, Manifest
from mamba4net.core.hookspecs import hookimpl
from mamba4net.registry.manager import Registry, set_default_registry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_shipped_manifests_match_the_shared_data(capsys):
    if not DATA.is_dir():
        pytest.skip("no ../shared/data beside the repository")
    assert main(["data", "verify", str(DATA), "--no-progress"]) == 0
    assert "all 3377 files of abr, cjs, vp verify" in capsys.readouterr().out


class Handler(SimpleHTTPRequestHandler):
    """Static files with HTTP ranges; ``cut`` (a set of paths) sends half of a file once, then
    drops the connection."""

    cut: set = set()
    seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        self.seen.append((self.path, rng))
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.path in self.cut:
            self.cut.discard(self.path)
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(data[start:])


@pytest.fixture
def mirror(tmp_path):
    """A loopback HTTP server over ``tmp_path/www`` holding an "upstream" and a "mirror" tree."""
    www = tmp_path / "www"
    files = {}
    rng_files = sorted((DATA / "abr" / "video" / "video1_sizes").glob("*")) if DATA.is_dir() else []
    sources = rng_files[:4] or []
    if not sources:  # no shared data: small made-up files
        sources = []
        for i in range(4):
            p = tmp_path / "made" / f"f{i}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(bytes(range(256)) * (20 + i))
            sources.append(p)
    for i, src in enumerate(sources):
        rel = f"sizes/{src.name}"
        for tree in ("upstream/c0ffee", "mirror/mini"):
            (www / tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, www / tree / rel)
        files[rel] = src.read_bytes()
    derived = b'{"converted": "here"}\n'
    (www / "mirror" / "mini" / "meta" / "ptrs.json").parent.mkdir(parents=True)
    (www / "mirror" / "mini" / "meta" / "ptrs.json").write_bytes(derived)
    files["meta/ptrs.json"] = derived
    Handler.cut, Handler.seen = set(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    manifest = Manifest("mini", "mini", [
        DataFile(rel, len(b), hashlib.sha256(b).hexdigest(),
                 None if rel.startswith("meta/") else f"{base}/upstream/c0ffee/{rel}")
        for rel, b in files.items()], {"meta/": "converted here"})

    class MiniData:
        @hookimpl
        def mamba4net_register_datasets(self, register):
            register("mini", lambda params: manifest)

    reg = Registry(load_entry_points=False)
    reg.add_plugin(MiniData(), name="mini_data")
    set_default_registry(reg)
    yield base, www, files
    set_default_registry(None)
    server.shutdown()


def test_fetch_into_an_empty_folder_then_verify(mirror, tmp_path, capsys):
    base, _, files = mirror
    to = tmp_path / "data"
    # from the pinned upstream: everything but the derived file, which only a mirror has
    assert main(["data", "fetch", "--to", str(to), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "fetched 4" in out and "mini/meta/ptrs.json: derived file" in out and len(err.splitlines()) == 1
    assert main(["data", "fetch", "--to", str(to), "--mirror", f"{base}/mirror", "--no-progress"]) == 0
    assert "fetched 1, already good 4, failed 0" in capsys.readouterr().out
    for rel, data in files.items():
        assert (to / "mini" / rel).read_bytes() == data
    assert main(["data", "verify", str(to), "--no-progress"]) == 0
    assert not list(to.rglob("*.part"))


def test_a_cut_download_resumes_with_a_range_request(mirror, tmp_path, capsys):
    base, _, files = mirror
    rel = next(r for r in files if r.startswith("sizes/"))
    Handler.cut = {f"/upstream/c0ffee/{rel}"}
    to = tmp_path / "data"
    assert main(["data", "fetch", "--to", str(to), "--no-progress"]) == 2  # the cut one failed (and the derived)
    assert f"mini/{rel}" in capsys.readouterr().out
    part = to / "mini" / (rel + ".part")
    assert 0 < part.stat().st_size < len(files[rel]) and not (to / "mini" / rel).exists()
    assert main(["data", "fetch", "--to", str(to), "--tasks", "mini", "--no-progress"]) == 2  # derived only
    assert (to / "mini" / rel).read_bytes() == files[rel] and not part.exists()
    ranged = [r for p, r in Handler.seen if p == f"/upstream/c0ffee/{rel}" and r]
    assert ranged == [f"bytes={len(files[rel]) // 2}-"]


def test_verify_names_altered_files_and_fetch_repairs_only_them(mirror, tmp_path, capsys):
    base, www, files = mirror
    to = tmp_path / "data"
    assert main(["data", "fetch", "--to", str(to), "--mirror", f"{base}/mirror", "--no-progress"]) == 0
    capsys.readouterr()
    rel = next(r for r in files if r.startswith("sizes/"))
    victim = to / "mini" / rel
    victim.write_bytes(b"0" + files[rel][1:])
    assert main(["data", "verify", str(to), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert f"{victim}: altered (sha256 differs)" in out and "1 of 5 files" in err
    # the mirror's copy is bad too: the local file is left as it is, nothing half-written remains
    (www / "mirror" / "mini" / rel).write_bytes(b"bad")
    before = victim.read_bytes()
    assert main(["data", "fetch", "--to", str(to), "--mirror", f"{base}/mirror", "--no-progress"]) == 2
    assert "does not match the manifest" in capsys.readouterr().out
    assert victim.read_bytes() == before and not list(to.rglob("*.part"))
    # the pinned upstream has the right one: repaired, and only it was downloaded
    Handler.seen = []
    assert main(["data", "fetch", "--to", str(to), "--no-progress"]) == 0
    assert victim.read_bytes() == files[rel]
    assert [p for p, _ in Handler.seen] == [f"/upstream/c0ffee/{rel}"]


def test_unknown_dataset_is_one_line(mirror, capsys):
    assert main(["data", "list", "--tasks", "minii"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'mini'" in err
