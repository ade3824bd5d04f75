"""A worker configured with SAFEFACE_SWAPPER = an ONNX swapper runs swap jobs through it, with
no code change: the site's processing passes the setting into the engine options and records the
swapper in the job's report. The swapper is a tiny ONNX model with inswapper_128's exact
signature (see tests/engine/test_swap_onnx.py), loaded through the real manifest checks."""
from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from safeface.jobs import JobStatus
from swaps.models import SwapJob
from tests.engine.test_swap_onnx import build_models, use_models
from tests.swaps.conftest import encode, faces_picture, real_persona, run_job

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("swap_models")]


@pytest.fixture
def tiny_swapper(monkeypatch, tmp_path, settings):
    from engine import models
    from engine.swap import neural

    files = build_models(tmp_path / "models")
    # the embedded models (face analysis, safety) stay where they are: link them in
    for entry in models.MANIFEST:
        if entry.group not in models.PRODUCTION_GROUPS:
            original = models.models_dir() / entry.name
            if original.exists():
                (tmp_path / "models" / entry.name).symlink_to(original)
    use_models(monkeypatch, tmp_path / "models", files)
    settings.SWAPPER = "inswapper_128"
    yield
    neural.clear_swappers()


def test_a_swap_job_runs_the_configured_onnx_swapper(owner_client, owner, tiny_swapper, monkeypatch):
    from django.urls import reverse
    from django.core.files.uploadedfile import SimpleUploadedFile

    from engine.swap import neural
    from swaps.models import Upload

    calls = []
    real = neural.NeuralSwapper.swap_batch
    monkeypatch.setattr(neural.NeuralSwapper, "swap_batch", lambda self, c, v: calls.append(self.name) or real(self, c, v))

    nova = real_persona(owner, seed=1, name="Nova")
    photo = encode(faces_picture((14, 15)), quality=92)
    response = owner_client.post(reverse("swaps-new"), {"file": SimpleUploadedFile("two.jpg", photo)})
    assert response.status_code == 302
    run_job("swaps.Upload")
    upload = Upload.objects.latest("pk")
    assert upload.status == JobStatus.SUCCEEDED, upload.error
    response = owner_client.post(
        reverse("swaps-upload", args=[upload.pk]),
        {"others": "keep", "audio": "keep", "quality": "standard", "face_0": nova.pk},
    )
    assert response.status_code == 302
    run_job("swaps.SwapJob")
    job = SwapJob.objects.latest("pk")
    assert job.status == JobStatus.SUCCEEDED, job.error

    # the neural swapper did the work, and the report says which one
    assert calls and set(calls) == {"inswapper_128"}
    assert job.report["swapper"] == "inswapper_128"
    faces = {f["index"]: f for f in job.report["faces"]}
    assert faces[0]["action"] == "swapped" and faces[0]["shape_strength"] is None
    assert faces[1]["action"] == "kept"

    # the face the tiny inswapper replaced changed colour; the other face did not change
    with Image.open(io.BytesIO(default_storage.open(job.result.name).read())) as im:
        result = np.asarray(im.convert("RGB")).astype(int)
    with Image.open(io.BytesIO(photo)) as im:
        original = np.asarray(im.convert("RGB")).astype(int)
    w = original.shape[1] // 2
    left = np.abs(result[:, :w] - original[:, :w]).mean()
    right = np.abs(result[:, w:] - original[:, w:]).mean()
    assert left > 3 * right and left > 2.0


def test_the_licence_gate_fails_the_job_and_logs_why(owner_client, owner, tiny_swapper, monkeypatch, caplog):
    """A commercial deployment refuses the non-commercial inswapper: the user sees that the swap
    engine is unavailable (server configuration is not theirs to read), the log says why."""
    from django.urls import reverse
    from django.core.files.uploadedfile import SimpleUploadedFile

    from swaps.models import Upload

    monkeypatch.setenv("SAFEFACE_COMMERCIAL", "1")
    nova = real_persona(owner, seed=1, name="Nova")
    photo = encode(faces_picture((14, 15)), quality=92)
    owner_client.post(reverse("swaps-new"), {"file": SimpleUploadedFile("two.jpg", photo)})
    run_job("swaps.Upload")
    upload = Upload.objects.latest("pk")
    owner_client.post(
        reverse("swaps-upload", args=[upload.pk]),
        {"others": "keep", "audio": "keep", "quality": "standard", "face_0": nova.pk},
    )
    run_job("swaps.SwapJob", expect="failed")
    job = SwapJob.objects.latest("pk")
    assert job.status == JobStatus.FAILED
    assert "not available on this server" in job.error
    assert "Model inswapper_128.onnx is licensed for non-commercial use only" in caplog.text
