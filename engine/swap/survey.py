"""Survey of an upload: who is in it, for the face picker.

:func:`survey_image` lists the faces of a photo under the same indexes :meth:`FaceAnalyzer.analyze`
gives them (so a face picked by index addresses the same face when the swap analyses the photo
again). :func:`survey_frames` groups the faces seen in sampled video frames into people by identity,
each with its best view, a thumbnail and a mean identity embedding that a swap can use as a
:class:`engine.swap.pipeline.Target` reference. Django-free; every face is embedded once.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from engine.faces import Face, FaceAnalyzer

THUMB_SCALE = 1.6  # thumbnail side / the face box's longer side


@dataclass
class SurveyFace:
    key: int  # photos: the face's index; videos: the person's number
    box: tuple[float, float, float, float]  # in the frame where it was seen best
    time: float | None  # seconds into the video of that frame; None for photos
    embedding: np.ndarray  # (128,) float32 identity; videos: mean over its appearances
    quality: float  # Face.quality of the best appearance
    appearances: int  # sampled frames it appears in (1 for photos)
    thumbnail: np.ndarray  # (S, S, 3) uint8 RGB square crop around the face, S = thumb_size


@dataclass
class Survey:
    width: int
    height: int
    faces: list[SurveyFace]
    samples: int  # frames examined (1 for a photo)


def thumbnail(rgb: np.ndarray, box, size: int = 160, scale: float = THUMB_SCALE) -> np.ndarray:
    """A (size, size, 3) uint8 square crop centred on ``box``, ``scale`` x its longer side,
    padded with the edge colour where it runs past the image."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(2, int(round(scale * max(x1 - x0, y1 - y0, 1.0))))
    left = int(round((x0 + x1) / 2 - side / 2))
    top = int(round((y0 + y1) / 2 - side / 2))
    # the part inside the image (at least one pixel, so there is an edge colour to pad with)
    cx0, cy0 = min(max(left, 0), w - 1), min(max(top, 0), h - 1)
    cx1, cy1 = max(min(left + side, w), cx0 + 1), max(min(top + side, h), cy0 + 1)
    crop = rgb[cy0:cy1, cx0:cx1]
    pad_top, pad_left = max(cy0 - top, 0), max(cx0 - left, 0)
    pad_bottom, pad_right = max(side - pad_top - crop.shape[0], 0), max(side - pad_left - crop.shape[1], 0)
    if pad_top or pad_left or pad_bottom or pad_right:
        crop = cv2.copyMakeBorder(crop, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_REPLICATE)
    crop = crop[:side, :side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=interpolation))


def _embedding(analyzer: FaceAnalyzer, rgb: np.ndarray, face: Face) -> np.ndarray:
    return np.asarray(analyzer.embed(rgb, face), np.float32).reshape(-1).copy()


def survey_image(rgb: np.ndarray, analyzer: FaceAnalyzer, *, thumb_size: int = 160) -> Survey:
    """Every face of a photo, in index order, ``key`` = the index ``analyzer.analyze`` gives it."""
    faces = sorted(analyzer.analyze(rgb), key=lambda f: f.index)
    h, w = rgb.shape[:2]
    return Survey(
        width=int(w), height=int(h), samples=1,
        faces=[
            SurveyFace(
                key=face.index, box=tuple(float(v) for v in face.box), time=None,
                embedding=_embedding(analyzer, rgb, face), quality=float(face.quality), appearances=1,
                thumbnail=thumbnail(rgb, face.box, thumb_size),
            )
            for face in faces
        ],
    )


@dataclass
class _Person:
    total: np.ndarray  # sum of the embeddings (float64)
    count: int
    first_sample: int
    first_x: float
    best: SurveyFace

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count


def _samples(frames: Iterable) -> Iterator[tuple[float, np.ndarray]]:
    for item in frames:
        if len(item) == 3:  # engine.media.VideoFrame (index, time, rgb)
            yield float(item[1]), item[2]
        else:
            time, rgb = item
            yield float(time), rgb


def survey_frames(
    frames: Iterable[tuple[float, np.ndarray]],
    analyzer: FaceAnalyzer,
    *,
    same_person: float = 0.5,
    thumb_size: int = 160,
    max_people: int = 24,
) -> Survey:
    """The people seen in sampled video frames (``(time, rgb)`` pairs, or
    :class:`engine.media.VideoFrame` objects, e.g. one per second from ``iter_frames``).

    Faces are grouped online: each frame's faces go, nearest pair first, to the person with the
    nearest mean embedding when it is closer than ``same_person`` (two faces of one frame never
    go to the same person); the others start new people. Each person keeps its best-quality
    view (box, time, thumbnail). People are ordered by first appearance, then left to right;
    beyond ``max_people`` those seen least often are dropped. ``key`` = position."""
    people: list[_Person] = []
    samples = 0
    width = height = 0
    for sample, (time, rgb) in enumerate(_samples(frames)):
        samples += 1
        height, width = rgb.shape[:2]
        faces = analyzer.analyze(rgb)
        if not faces:
            continue
        embeddings = [_embedding(analyzer, rgb, face) for face in faces]
        owner: list[_Person | None] = [None] * len(faces)
        if people:
            means = np.stack([p.mean for p in people])
            distances = np.linalg.norm(np.stack(embeddings).astype(np.float64)[:, None, :] - means[None], axis=2)
            # nearest (face, person) pairs first; each face and each person used once per frame
            for flat in np.argsort(distances, axis=None, kind="stable"):
                i, j = divmod(int(flat), len(people))
                if distances[i, j] >= same_person:
                    break
                if owner[i] is None and all(o is not people[j] for o in owner):
                    owner[i] = people[j]
        for face, embedding, person in zip(faces, embeddings, owner):
            if person is None:
                people.append(_Person(
                    total=embedding.astype(np.float64), count=1, first_sample=sample, first_x=float(face.box[0]),
                    best=_appearance(rgb, face, embedding, time, thumb_size),
                ))
                continue
            person.total = person.total + embedding
            person.count += 1
            if face.quality > person.best.quality:
                person.best = _appearance(rgb, face, embedding, time, thumb_size)
    if len(people) > max_people:
        keep = sorted(people, key=lambda p: (-p.count, p.first_sample, p.first_x))[:max(max_people, 0)]
        people = [p for p in people if any(p is k for k in keep)]
    people.sort(key=lambda p: (p.first_sample, p.first_x))
    faces = []
    for key, person in enumerate(people):
        best = person.best
        best.key, best.appearances = key, person.count
        best.embedding = person.mean.astype(np.float32)
        faces.append(best)
    return Survey(width=int(width), height=int(height), faces=faces, samples=samples)


def video_samples(path, *, interval: float = 1.0) -> Iterator[tuple[float, np.ndarray]]:
    """``(time, rgb)`` samples of a video about every ``interval`` seconds (for
    :func:`survey_frames`), decoded with :func:`engine.media.iter_frames`."""
    from engine.media import iter_frames, probe_video  # noqa: PLC0415 - PyAV only when needed

    every = max(1, int(round(float(probe_video(path).fps) * interval)))
    for frame in iter_frames(path, every=every):
        yield frame.time, frame.rgb


def _appearance(rgb: np.ndarray, face: Face, embedding: np.ndarray, time: float, thumb_size: int) -> SurveyFace:
    return SurveyFace(
        key=-1, box=tuple(float(v) for v in face.box), time=float(time), embedding=embedding,
        quality=float(face.quality), appearances=1, thumbnail=thumbnail(rgb, face.box, thumb_size),
    )
