"""THE REAL-ENGINE TEST of persona generation: the job runs the real ``generate_avatars``
(MobileStyleGAN on OpenVINO, real measurements and identity embeddings) end to end, with an
existing avatar it must stay away from. Slow (about half a minute on 2 CPU cores); needs the
model files (skipped locally without them, a failure under CI)."""
from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from avatars import services
from avatars.models import Avatar, GenerationJob
from engine.generate.attributes import AttributeRequest
from engine.media.provenance import read_digital_source_type, watermark_detect
from safeface.jobs import JobStatus, run_next_job
from tests.conftest import make_user
from tests.engine.conftest import require_models

pytestmark = [pytest.mark.django_db, pytest.mark.engine]

REQUEST = {"gender": "feminine", "glasses": "no"}


def first_attempt_embedding(seed: int, request: AttributeRequest) -> np.ndarray | None:
    """The identity embedding of the first candidate a job seeded ``seed`` renders (None when
    that face would be rejected anyway)."""
    from engine.faces import FaceAnalyzer
    from engine.generate.measure import measure_face, source_problems
    from engine.generate.pipeline import candidate_seed, render_avatar

    analyzer = FaceAnalyzer.default()
    m = measure_face(render_avatar(candidate_seed(seed, 0), request), analyzer, embed=False)
    if source_problems(m):
        return None
    return analyzer.embed(m.analysed_image, m.face)


def test_real_engine_generation_job_end_to_end(owner):
    from engine.generate.pipeline import GenerationOptions, candidate_seed, render_avatar

    require_models()
    request = AttributeRequest.from_dict(REQUEST)
    # Another user already owns the face this job would render first: it must not come back.
    seed, existing = next(
        (s, e) for s in itertools.count(1000) if (e := first_attempt_embedding(s, request)) is not None
    )
    stranger = make_user("stranger@example.com")
    taken = Avatar.objects.create(
        user=stranger, status="ready", name="Taken", image="users/0/none.png", generator="x", model_hash="x",
        seed=candidate_seed(seed, 0), embedding=existing.astype("<f4").tobytes(), signature="x",
    )

    job = services.generation_start(user=owner, attributes=REQUEST)
    GenerationJob.objects.filter(pk=job.pk).update(seed=seed)
    assert run_next_job("avatars.GenerationJob").endswith("succeeded")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.progress == 100

    candidates = list(job.candidates())
    assert 1 <= len(candidates) <= 4
    margin = GenerationOptions().uniqueness_margin
    embeddings = np.array([c.embedding_array for c in candidates])
    assert np.linalg.norm(embeddings - taken.embedding_array, axis=1).min() >= margin
    assert candidate_seed(seed, 0) not in {c.seed for c in candidates}
    for a, b in itertools.combinations(embeddings, 2):
        assert np.linalg.norm(a - b) >= margin
    for candidate in candidates:
        data = services.avatar_verify(candidate)
        assert read_digital_source_type(data).endswith("/trainedAlgorithmicMedia")
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert pixels.shape == (1024, 1024, 3) and watermark_detect(pixels)
        assert candidate.generator and len(candidate.model_hash) >= 12
        assert set(candidate.matched) == set(REQUEST)
        assert {"monk", "ita", "age"} <= set(candidate.measured)
        # The seed is real provenance: it renders the same face again (up to the watermark).
        again = render_avatar(candidate.seed, request)
        assert np.abs(again.astype(int) - pixels.astype(int)).mean() < 2.0

    kept = services.avatar_pick(user=owner, avatar=candidates[0], name="Real")
    assert kept.status == "ready" and services.avatar_verify(kept)
    assert default_storage.exists(kept.image.name)
