"""End to end through the services with the real engine: a corpus photo, two personas."""
from __future__ import annotations

import pytest

from swaps import services
from swaps.models import SwapJob, Upload
from tests.swaps.conftest import corpus_dir, real_persona, run_job, uploaded

pytestmark = [pytest.mark.corpus, pytest.mark.django_db(transaction=True)]


def test_group_photo_two_personas(owner, swap_models):
    first, second = real_persona(owner, seed=1, name="Nova"), real_persona(owner, seed=2, name="Rio")
    upload = services.upload_create(user=owner, file=uploaded(corpus_dir() / "faces/group_obama_biden_2faces.jpg"))
    run_job("swaps.Upload")
    upload.refresh_from_db()
    assert upload.status == "succeeded", upload.error
    assert sorted(upload.faces.values_list("key", flat=True)) == [0, 1]
    job = services.swap_start(user=owner, upload=upload, assignments={0: first.pk, 1: second.pk})
    run_job("swaps.SwapJob")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    print(job.report, job.protection())
