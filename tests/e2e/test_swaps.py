"""The swap journeys in a real browser, with the jobs run by real ``manage.py qcluster``
processes (the default cluster and the "gpu" cluster) on the embedded default broker (django-q's
ORM broker in the same SQLite database as the live server, no Redis).

Photo: log in, find the empty swaps page, upload a group photo through the file input (the
upload progress bar shows), wait while a worker checks it, choose a persona for each face in
the picker, start, follow the job's progress, compare before and after with the slider,
download the protected JPEG and find the swap in the history.

Video: upload a talking-head clip with sound through the drop zone, choose a persona, keep the
sound, watch the frames being swapped, play both videos side by side and download the MP4
(video and sound)."""
from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from playwright.sync_api import Page, expect

from swaps.models import SwapJob, Upload
from tests.conftest import PASSWORD, make_user
from tests.e2e.test_account_journey import fill_login, nav, path_is
from tests.engine.conftest import require_models
from tests.swaps.conftest import real_persona

pytestmark = pytest.mark.corpus

ROOT = Path(__file__).resolve().parents[2]
JOB_WAIT_MS = 240_000  # a worker on two shared CPU cores: checks take seconds, a video swap a minute or two
PHOTO = "faces/group_obama_biden_2faces.jpg"
VIDEO = "videos/video_aoc_talking_5s.mp4"


# --- the real workers ---------------------------------------------------------------------------
@dataclass
class Clusters:
    """``manage.py qcluster`` processes (one per cluster name), each leading its own process group."""

    database: Path
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def assert_running(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"the {name} qcluster exited ({process.returncode}):\n{self.log_tail(name)}"

    def log_tail(self, name: str, size: int = 4000) -> str:
        text = self.logs[name].read_text(errors="replace") if self.logs[name].exists() else ""
        return text[-size:]

    def _database_is_write_locked(self) -> bool:
        probe = sqlite3.connect(self.database, timeout=0.05, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """Freezes a cluster (SIGSTOP to its process group) so the page can be seen waiting for a
        worker, then lets it go on. A cluster frozen while it holds SQLite's write lock would
        stall the site, so it is frozen only at a moment it holds none."""
        self.assert_running()
        group = self.processes[name].pid
        for _ in range(100):
            os.killpg(group, signal.SIGSTOP)
            if not self._database_is_write_locked():
                break
            os.killpg(group, signal.SIGCONT)
            time.sleep(0.05)
        else:
            pytest.fail(f"the {name} qcluster kept the database locked")
        try:
            yield
        finally:
            os.killpg(group, signal.SIGCONT)

    def stop(self) -> None:
        """Asks each cluster to stop (SIGTERM to the qcluster process, which stops its own
        workers), then kills whatever is left of its process group."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def qclusters(live_site, _isolated_media, tmp_path) -> Iterator[Clusters]:
    """Starts the default and the gpu cluster against the live server's database and media.

    The live server uses the test database, which tests/settings.py makes a file on SQLite, so
    the workers open the same file (django-q's ORM broker keeps its queue in it too). The
    workers also share the test's media folder, its SECRET_KEY (persona signatures are checked
    with it) and the engine's model files. Stopped, and the logs printed, after the test (before
    the test database is emptied)."""
    database = connections["default"].settings_dict
    if database["ENGINE"] != "django.db.backends.sqlite3" or connections["default"].is_in_memory_db():
        pytest.fail("the swap journeys need the file-based SQLite test database of tests/settings.py")
    from engine.models import models_dir

    path = Path(database["NAME"])
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{path}",
        "SECRET_KEY": settings.SECRET_KEY,
        "SAFEFACE_VAR_DIR": str(tmp_path / "worker-var"),
        "SAFEFACE_MEDIA_ROOT": str(_isolated_media),
        "SAFEFACE_MODELS_DIR": str(models_dir()),
        "SAFEFACE_TEMP_DIR": str(tmp_path),
        "Q_WORKERS": "1",
        "Q_GPU_WORKERS": "1",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("REDIS_URL", "Q_CLUSTER_NAME", "DJANGO_ALLOW_ASYNC_UNSAFE"):
        env.pop(name, None)
    clusters = Clusters(database=path, logs={n: tmp_path / f"qcluster-{n}.log" for n in ("default", "gpu")})
    try:
        for name in ("default", "gpu"):
            cluster_env = {**env, **({"Q_CLUSTER_NAME": name} if name != "default" else {})}
            with open(clusters.logs[name], "w") as log:
                clusters.processes[name] = subprocess.Popen(
                    [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=cluster_env,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
        yield clusters
    finally:
        clusters.stop()
        for name in clusters.logs:
            print(f"--- qcluster {name} log (end) ---\n{clusters.log_tail(name)}")


# --- helpers ------------------------------------------------------------------------------------
def swap_models() -> None:
    require_models("faces")
    require_models("generator")
    require_models("safety")


def log_in(page: Page, email: str) -> None:
    page.goto("/accounts/login/")
    fill_login(page, email=email, password=PASSWORD)
    expect(page).to_have_url(path_is("/accounts/usage/"))


def settled(page: Page) -> None:
    """Waits until htmx has no request in flight and nothing left to swap or settle."""
    expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)


def choose_persona(page: Page, face: str, persona_pk: int) -> None:
    """Chooses a persona in a face's select; the picker re-renders through htmx."""
    with page.expect_response(lambda r: "picker=1" in r.url and r.status == 200):
        page.get_by_label(face).select_option(str(persona_pk))
    settled(page)
    expect(page.get_by_label(face)).to_have_value(str(persona_pk))


def image_loaded(page: Page, locator) -> int:
    """The natural width of an <img> once it loaded (0 if it failed)."""
    page.wait_for_function("img => img.complete", arg=locator.element_handle())
    return locator.evaluate("img => img.naturalWidth")


def drop_file(page: Page, zone, path: Path, mime: str) -> None:
    """Drops a file on the drop zone like a user dragging it from their desktop."""
    payload = base64.b64encode(path.read_bytes()).decode()
    zone.evaluate(
        """(zone, [name, mime, payload]) => {
            const bytes = Uint8Array.from(atob(payload), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, {type: mime}));
            const options = {dataTransfer: data, bubbles: true, cancelable: true};
            zone.dispatchEvent(new DragEvent("dragenter", options));
            window.__dropZoneHighlighted = zone.classList.contains("border-brand-500");
            zone.dispatchEvent(new DragEvent("drop", options));
        }""",
        [path.name, mime, payload],
    )
    assert page.evaluate("window.__dropZoneHighlighted") is True


@contextlib.contextmanager
def slow_upload(page: Page, bytes_per_second: int) -> Iterator[None]:
    """Throttles the browser's uploads (DevTools network emulation) so progress can be seen."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", {**conditions, "uploadThroughput": bytes_per_second})
    try:
        yield
    finally:
        cdp.send("Network.emulateNetworkConditions", {**conditions, "uploadThroughput": -1})
        cdp.detach()


def has_exif(jpeg: bytes) -> bool:
    """True when any APP1 segment of the JPEG holds EXIF."""
    position = 2
    while position + 4 <= len(jpeg) and jpeg[position] == 0xFF:
        marker = jpeg[position + 1]
        if marker == 0xDA:  # start of scan: no more metadata segments
            return False
        length = int.from_bytes(jpeg[position + 2:position + 4], "big")
        if marker == 0xE1 and jpeg[position + 4:position + 10] == b"Exif\x00\x00":
            return True
        position += 2 + length
    return False


# --- the journeys -------------------------------------------------------------------------------
def test_protect_a_group_photo_with_two_personas(page: Page, screenshot, qclusters, corpus) -> None:
    swap_models()
    user = make_user("photo-swapper@example.com")
    nova = real_persona(user, seed=1, name="Nova")
    rio = real_persona(user, seed=2, name="Rio")
    photo = corpus / PHOTO
    log_in(page, user.email)

    # The swaps page starts empty and leads to the upload page.
    nav(page).get_by_role("link", name="Swaps").click()
    expect(page).to_have_url(path_is("/swaps/"))
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    page.get_by_role("link", name="Protect a photo or video").click()
    expect(page).to_have_url(path_is("/swaps/new/"))
    expect(page.get_by_test_id("no-personas")).to_have_count(0)
    expect(page.get_by_test_id("upload-progress")).to_be_hidden()

    # Choose the photo through the file input; the drop zone names it.
    page.get_by_label("Photo or video").set_input_files(photo)
    expect(page.get_by_test_id("chosen-file")).to_have_text(re.compile(r"^group_obama_biden_2faces\.jpg \(0\.5 MB\)$"))
    screenshot("upload-chosen")

    # Upload over a slow line: the progress bar shows and fills. No gpu worker is free yet, so
    # the upload page then says the check is waiting for one.
    with qclusters.paused("gpu"):
        with slow_upload(page, 160 * 1024):
            page.get_by_role("button", name="Upload and find faces").click()
            progress = page.get_by_test_id("upload-progress")
            expect(progress).to_be_visible()
            expect(page.get_by_role("button", name="Upload and find faces")).to_be_disabled()
            page.wait_for_function("bar => bar.value > 0", arg=progress.element_handle())
            screenshot("uploading")
            expect(page).to_have_url(re.compile(r"/swaps/uploads/\d+/$"), timeout=30_000)
        upload = Upload.objects.get(user=user)
        assert (upload.kind, upload.width, upload.height, upload.original_name) == ("image", 1126, 661, photo.name)
        expect(page.get_by_test_id("upload-name")).to_have_text(photo.name)
        check = page.get_by_test_id("upload-check")
        expect(check).to_be_visible()
        expect(check).to_contain_text("Waiting for a worker…")
        screenshot("upload-waiting")

    # The gpu worker checks it while the page polls; then the picker shows both faces, numbered
    # boxes over the photo and a thumbnail per face.
    rows = page.get_by_test_id("face-row")
    expect(rows).to_have_count(2, timeout=JOB_WAIT_MS)
    upload.refresh_from_db()
    assert upload.status == "succeeded", upload.error
    assert upload.samples == 1 and upload.content_flagged == 0
    expect(page.get_by_test_id("upload-check")).to_have_count(0)
    assert image_loaded(page, page.get_by_test_id("upload-preview")) == 1126
    for index in range(2):
        assert image_loaded(page, rows.nth(index).get_by_role("img")) > 0
    boxes = page.locator("[data-face-overlay] .face-box")
    expect(boxes).to_have_count(2)
    expect(boxes.nth(0)).to_have_text("1")
    overlay = page.locator("[data-face-overlay]").bounding_box()
    for index in range(2):  # placed over the photo by swaps.js, from the survey's boxes
        box = boxes.nth(index).bounding_box()
        assert box["width"] > 20 and box["height"] > 20, box
        assert overlay["x"] <= box["x"] and box["x"] + box["width"] <= overlay["x"] + overlay["width"] + 1, (box, overlay)
        assert overlay["y"] <= box["y"] and box["y"] + box["height"] <= overlay["y"] + overlay["height"] + 1, (box, overlay)
    first, second = (boxes.nth(i).bounding_box() for i in range(2))
    assert first["x"] + first["width"] <= second["x"] or second["x"] + second["width"] <= first["x"]  # side by side
    expect(page.get_by_test_id("swaps-left")).to_contain_text("Uses 1 of the")

    # Persona A for face 1, persona B for face 2: the picker follows each choice.
    choose_persona(page, "Face 1", nova.pk)
    choose_persona(page, "Face 2", rio.pk)
    for index in range(2):
        expect(rows.nth(index)).to_have_class(re.compile(r"\bbg-brand-50\b"))
        expect(boxes.nth(index)).to_have_class(re.compile(r"\bface-box-chosen\b"))
    expect(page.get_by_test_id("resemblance-warning")).to_have_count(0)
    start = page.get_by_test_id("start-swap")
    expect(start).to_have_text("Protect 2 faces")
    expect(start).to_be_enabled()
    screenshot("picker")

    # Start: the job page shows the progress bar while the swap waits for and runs on a worker.
    with qclusters.paused("gpu"):
        start.click()
        expect(page).to_have_url(re.compile(r"/swaps/\d+/$"))
        job = SwapJob.objects.get(user=user)
        expect(page.get_by_test_id("job-assignments")).to_contain_text("Face 1 → Nova · Face 2 → Rio")
        job_progress = page.get_by_test_id("job-progress")
        expect(job_progress).to_be_visible()
        expect(job_progress).to_contain_text("Waiting for a worker…")
        expect(job_progress.locator("progress")).to_have_attribute("value", "0")
        screenshot("job-waiting")
    assert sorted(job.assignments.values_list("face_key", "avatar_id")) == [(0, nova.pk), (1, rio.pk)]

    # The result: the identity check's verdict, the before/after slider and the download.
    headline = page.get_by_test_id("protection-headline")
    expect(headline).to_be_visible(timeout=JOB_WAIT_MS)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.result.name.endswith(".jpg")
    expect(headline).to_contain_text("no longer recognisable")
    expect(page.get_by_test_id("protection")).to_have_attribute("data-level", "protected")
    expect(page.get_by_test_id("job-progress")).to_have_count(0)
    slider = page.get_by_test_id("compare-slider")
    expect(slider).to_be_visible()
    assert image_loaded(page, slider.get_by_role("img", name="After: protected")) == 1126
    assert image_loaded(page, slider.get_by_role("img", name="Before: original")) == 1126
    split = "el => el.style.getPropertyValue('--split')"
    assert slider.evaluate(split) == "50%"
    screenshot("result")  # split between the two people: face 1 before, face 2 after
    handle = slider.get_by_label("Drag to compare before and after")
    handle.fill("20")
    assert slider.evaluate(split) == "20%"
    before = slider.locator("[data-compare-before]")
    assert before.evaluate("el => getComputedStyle(el).clipPath") == "inset(0px 80% 0px 0px)"  # the original shows on the left fifth
    frame, knob = slider.bounding_box(), slider.get_by_test_id("compare-handle").bounding_box()
    assert abs(knob["x"] + knob["width"] / 2 - (frame["x"] + 0.2 * frame["width"])) < 2, (knob, frame)  # the knob follows
    handle.fill("85")
    assert slider.evaluate(split) == "85%"

    download_link = page.get_by_test_id("download")
    expect(download_link).to_contain_text("Download photo")
    with page.expect_download() as download_info:
        download_link.click()
    download = download_info.value
    assert download.suggested_filename == "group_obama_biden_2faces-protected.jpg"
    data = Path(download.path()).read_bytes()
    assert data.startswith(b"\xff\xd8\xff"), data[:8]
    assert not has_exif(data)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "JPEG" and picture.size == (1126, 661)
        assert len(picture.getexif()) == 0
    from engine.media.provenance import TRAINED_ALGORITHMIC_MEDIA

    assert TRAINED_ALGORITHMIC_MEDIA.encode() in data  # labelled as synthetic media (XMP)
    with job.result.open("rb") as stored:
        assert data == stored.read()

    # The history lists the swap with its result's thumbnail.
    nav(page).get_by_role("link", name="Swaps").click()
    expect(page).to_have_url(path_is("/swaps/"))
    items = page.get_by_test_id("swap-item")
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-status", "succeeded")
    expect(items.first.get_by_test_id("swap-status")).to_have_text("Succeeded")
    expect(items.first).to_contain_text(photo.name)
    assert image_loaded(page, items.first.get_by_role("img")) > 0
    expect(page.get_by_test_id("empty-state")).to_have_count(0)
    expect(page.get_by_test_id("waiting-upload")).to_have_count(0)
    expect(page.get_by_test_id("swaps-meter")).to_contain_text("1 of")
    screenshot("history")
    items.first.get_by_role("link", name=photo.name, exact=True).click()
    expect(page).to_have_url(path_is(f"/swaps/{job.pk}/"))
    expect(page.get_by_test_id("protection-headline")).to_contain_text("no longer recognisable")
    qclusters.assert_running()


def test_protect_a_short_video_with_sound(page: Page, screenshot, qclusters, corpus) -> None:
    swap_models()
    import av

    user = make_user("video-swapper@example.com")
    real_persona(user, seed=1, name="Nova")
    rio = real_persona(user, seed=2, name="Rio")
    video = corpus / VIDEO
    log_in(page, user.email)
    nav(page).get_by_role("link", name="Swaps").click()
    page.get_by_role("link", name="Protect a photo or video").click()
    expect(page).to_have_url(path_is("/swaps/new/"))

    # Drag the video onto the drop zone, then upload it.
    drop_file(page, page.get_by_test_id("drop-zone"), video, "video/mp4")
    expect(page.get_by_test_id("chosen-file")).to_have_text(f"{video.name} (0.4 MB)")
    expect(page.get_by_test_id("drop-zone")).not_to_have_class(re.compile(r"\bborder-brand-500\b"))
    screenshot("upload-dropped")
    page.get_by_role("button", name="Upload and find faces").click()
    expect(page).to_have_url(re.compile(r"/swaps/uploads/\d+/$"), timeout=30_000)
    upload = Upload.objects.get(user=user)
    assert (upload.kind, upload.has_audio, upload.width, upload.height) == ("video", True, 590, 590)
    assert upload.file.size == video.stat().st_size
    expect(page.get_by_text(re.compile(r"Video · 590×590 px · 5\.0 s with sound"))).to_be_visible()

    # The gpu worker samples one frame per second; the picker shows the person found.
    rows = page.get_by_test_id("face-row")
    expect(rows).to_have_count(1, timeout=JOB_WAIT_MS)
    upload.refresh_from_db()
    assert upload.status == "succeeded", upload.error
    assert upload.samples == 5
    expect(rows.first).to_contain_text(re.compile(r"seen in [45] of 5 s"))
    player = page.get_by_test_id("upload-video")
    page.wait_for_function("video => video.readyState >= 1", arg=player.element_handle(), timeout=20_000)
    assert player.evaluate("video => Math.round(video.duration)") == 5
    choose_persona(page, "Face 1", rio.pk)
    sound = page.get_by_label("Keep the original sound")
    expect(sound).to_be_checked()
    expect(page.get_by_label("Mask the voice with the persona's voice")).to_be_enabled()
    expect(page.get_by_label("Mask the voice with the persona's voice")).not_to_be_checked()
    start = page.get_by_test_id("start-swap")
    expect(start).to_have_text("Protect 1 face")
    screenshot("picker")

    # Start, and watch the frames go by.
    start.click()
    expect(page).to_have_url(re.compile(r"/swaps/\d+/$"))
    job = SwapJob.objects.get(user=user)
    assert job.audio == "keep"
    stage = page.get_by_test_id("job-stage")
    expect(stage).to_have_text(re.compile(r"^Frame \d+ of 125$"), timeout=JOB_WAIT_MS)
    bar = page.get_by_test_id("job-progress").locator("progress")
    first_value = int(bar.get_attribute("value"))
    assert 0 < first_value < 100
    expect(page.get_by_test_id("job-eta")).to_have_text(re.compile(r"^\d+ s$"), timeout=20_000)
    screenshot("job-running")
    seen = [first_value]  # the bar moves on as the page polls, until the result replaces it
    headline = page.get_by_test_id("protection-headline")
    deadline = time.monotonic() + JOB_WAIT_MS / 1000
    while not headline.is_visible() and time.monotonic() < deadline:
        value = page.evaluate("() => document.querySelector('[data-testid=job-progress] progress')?.value ?? null")
        if value is not None and value != seen[-1]:
            seen.append(int(value))
        qclusters.assert_running()
        page.wait_for_timeout(200)
    seen.append(SwapJob.objects.values_list("progress", flat=True).get(pk=job.pk))
    assert seen == sorted(seen) and seen[-1] == 100, seen

    # The result: side-by-side players that both load, and the MP4 with its sound.
    expect(headline).to_be_visible()
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    expect(page.get_by_test_id("protection-headline")).to_contain_text("no longer recognisable")
    videos = page.get_by_test_id("compare-videos")
    expect(videos.locator("video")).to_have_count(2)
    before, after = page.get_by_test_id("video-before"), page.get_by_test_id("video-after")
    for element in (before, after):  # metadata, then the first frame
        page.wait_for_function("video => video.readyState >= 2", arg=element.element_handle(), timeout=20_000)
        assert element.evaluate("video => [video.videoWidth, video.videoHeight]") == [590, 590]
        assert element.evaluate("video => Math.round(video.duration)") == 5
    response = page.request.get(f"/swaps/{job.pk}/result/")
    assert response.status == 200 and response.headers["content-type"] == "video/mp4"
    page.wait_for_timeout(2000)  # only for the picture: Chromium's own loading spinner fades out slowly
    screenshot("result")

    # Playing one player plays the other (static/js/swaps.js); pausing one pauses both.
    before.click()
    page.wait_for_function("video => !video.paused && video.currentTime > 0", arg=after.element_handle(), timeout=20_000)
    assert before.evaluate("video => !video.paused")
    after.click()
    page.wait_for_function("video => video.paused", arg=before.element_handle())
    # Seeking one seeks the other; the result is served in byte ranges, so it can seek unbuffered.
    after.evaluate("video => { video.currentTime = 4; }")
    page.wait_for_function("video => Math.abs(video.currentTime - 4) < 0.2", arg=before.element_handle(), timeout=20_000)
    ranged = page.request.get(f"/swaps/{job.pk}/result/", headers={"Range": "bytes=0-99"})
    assert ranged.status == 206 and len(ranged.body()) == 100

    with page.expect_download() as download_info:
        page.get_by_test_id("download").click()
    download = download_info.value
    assert download.suggested_filename == "video_aoc_talking_5s-protected.mp4"
    data = Path(download.path()).read_bytes()
    with job.result.open("rb") as stored:
        assert data == stored.read()
    with av.open(io.BytesIO(data)) as container:
        kinds = sorted(stream.type for stream in container.streams)
        assert kinds == ["audio", "video"], kinds
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (590, 590)
        assert container.streams.audio[0].codec_context.name == "aac"
        assert 4.5 < container.duration / 1_000_000 < 5.5
        assert any("Synthetic media" in value for value in container.metadata.values()), container.metadata

    nav(page).get_by_role("link", name="Swaps").click()
    expect(page.get_by_test_id("swap-item")).to_have_count(1)
    expect(page.get_by_test_id("swap-item").first).to_contain_text("Video")
    screenshot("history")
    qclusters.assert_running()
