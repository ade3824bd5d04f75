"""engine.media.provenance: HMAC signatures, the invisible watermark, synthetic-media XMP and
C2PA manifests.

Every image is made here (NumPy/OpenCV/Pillow); the corpus test runs only when SAFEFACE_CORPUS
names the shared media corpus. Speed is printed (``-s``), never asserted.
"""
from __future__ import annotations

import datetime
import io
import json
import time

import c2pa
import cv2
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image as PILImage

from engine.media import load_image, save_image
from engine.media.provenance import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    WATERMARK_MAX_BIT_ERRORS,
    WATERMARK_TEXT,
    C2PAConfig,
    c2pa_config_from_env,
    canonical_json,
    encode_avatar_image,
    encode_synthetic,
    insert_xmp,
    read_digital_source_type,
    read_xmp,
    sign,
    verify,
    watermark_bit_errors,
    watermark_detect,
    watermark_embed,
    watermark_read,
)

KEY = b"server-secret-0123456789abcdef-0123456789abcdef"
FORMATS = ["PNG", "JPEG", "WEBP"]


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like RGB test image: colour gradients, a lit 'face' ellipse, soft texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    channels = []
    for c in range(3):
        fx, fy, phase = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 6.28)
        channels.append(0.5 + 0.35 * np.sin(2 * np.pi * (fx * x + fy * y) + phase))
    image = np.stack(channels, axis=-1)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (height, width, 3)).astype(np.float32), (0, 0), 2.0)
    image = image + 0.06 * texture
    image = np.clip(image * 255, 0, 255).astype(np.uint8)
    centre = (int(width * rng.uniform(0.35, 0.65)), int(height * rng.uniform(0.35, 0.65)))
    axes = (max(4, width // 5), max(6, height // 4))
    cv2.ellipse(image, centre, axes, 0, 0, 360, (224, 172, 140), -1)
    cv2.circle(image, (centre[0] - axes[0] // 3, centre[1] - axes[1] // 4), max(2, width // 40), (40, 30, 30), -1)
    cv2.circle(image, (centre[0] + axes[0] // 3, centre[1] - axes[1] // 4), max(2, width // 40), (40, 30, 30), -1)
    return cv2.GaussianBlur(image, (0, 0), 1.0)


def jpeg_round_trip(rgb: np.ndarray, quality: int = 85) -> np.ndarray:
    return load_image(save_image(rgb, "jpeg", quality=quality)).pixels


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ----------------------------------------------------------------------------------------------
# signature
# ----------------------------------------------------------------------------------------------


def avatar_fields() -> dict:
    rng = np.random.default_rng(3)
    return {
        "generator": "stylegan-ffhq-1024",
        "model_hash": "ab" * 32,
        "seed": 123456789,
        "attributes": {"sex": "female", "age": "30-39", "monk": 5, "glasses": False},
        "embedding": rng.normal(0, 0.1, 128).astype(np.float32),
    }


def test_signature_verifies_and_survives_a_json_round_trip_of_the_fields():
    image = encode_synthetic(photo_like(64, 64), format="PNG", generator="test")
    fields = avatar_fields()
    signature = sign(KEY, image, fields)
    assert len(signature) == 64 and int(signature, 16) >= 0
    assert verify(KEY, image, fields, signature)
    # As the site stores them: a JSON column, the embedding a list of floats.
    stored = json.loads(json.dumps({**fields, "embedding": fields["embedding"].tolist()}))
    assert verify(KEY, image, stored, signature)
    # Key order does not matter.
    assert verify(KEY, image, dict(reversed(list(stored.items()))), signature)


def test_signature_fails_on_any_changed_image_byte():
    image = encode_synthetic(photo_like(64, 64), format="PNG", generator="test")
    fields = avatar_fields()
    signature = sign(KEY, image, fields)
    for position in (0, 1, len(image) // 2, len(image) - 1):
        changed = bytearray(image)
        changed[position] ^= 0x01
        assert not verify(KEY, bytes(changed), fields, signature), position
    assert not verify(KEY, image[:-1], fields, signature)
    assert not verify(KEY, image + b"\x00", fields, signature)


def test_signature_fails_on_any_changed_field_or_key():
    image = b"\x89PNG fake bytes"
    fields = avatar_fields()
    signature = sign(KEY, image, fields)
    changes = {
        "generator": "other-generator",
        "model_hash": "ab" * 31 + "ac",
        "seed": 123456788,
        "attributes": {**fields["attributes"], "glasses": True},
        "embedding": fields["embedding"] + np.float32(0.001) * (np.arange(128) == 7),
    }
    for name, value in changes.items():
        assert not verify(KEY, image, {**fields, name: value}, signature), name
    without = dict(fields)
    del without["seed"]
    assert not verify(KEY, image, without, signature)
    assert not verify(KEY, image, {**fields, "extra": None}, signature)
    assert not verify(KEY[:-1] + b"X", image, fields, signature)
    assert not verify(b"another key", image, fields, signature)
    # A malformed or altered signature is simply not valid.
    assert not verify(KEY, image, fields, signature[:-1] + ("0" if signature[-1] != "0" else "1"))
    assert not verify(KEY, image, fields, signature.upper())
    assert not verify(KEY, image, fields, "")
    assert not verify(KEY, image, fields, "é" * 64)
    assert not verify(KEY, image, fields, None)


def test_canonical_json_is_deterministic_and_refuses_what_it_cannot_encode():
    assert canonical_json({"b": 1, "a": [1.0000004, -0.0, np.float32(0.5)]}) == b'{"a":[1.0,0.0,0.5],"b":1}'
    assert canonical_json({"x": b"\x00\xff"}) == b'{"x":{"$bytes":"AP8="}}'
    assert canonical_json({"x": np.arange(3, dtype=np.int64)}) == b'{"x":[0,1,2]}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(ValueError):
        canonical_json({"$bytes": "AP8="})
    with pytest.raises(TypeError):
        canonical_json({1: "x"})
    with pytest.raises(TypeError):
        canonical_json({"x": object()})
    with pytest.raises(TypeError):
        sign("not bytes", b"", {})


# ----------------------------------------------------------------------------------------------
# watermark
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1024, 1024), (512, 512), (512, 768)])
def test_watermark_survives_jpeg_q85(size):
    for seed in range(3):
        image = photo_like(*size, seed=seed)
        marked = watermark_embed(image)
        assert marked.shape == image.shape and marked.dtype == np.uint8
        assert psnr(image, marked) > 36  # invisible: a change of ~2-4 levels in the U channel only
        assert watermark_read(marked) == WATERMARK_TEXT
        compressed = jpeg_round_trip(marked, 85)
        errors = watermark_bit_errors(compressed)
        print(f"\n{size[1]}x{size[0]} seed {seed}: {errors} of 64 bits wrong after JPEG q85")
        assert watermark_detect(compressed)
        assert not watermark_detect(jpeg_round_trip(image, 85))


def test_clean_images_carry_no_watermark():
    rng = np.random.default_rng(7)
    cases = [photo_like(512, 512, seed=s) for s in range(10, 16)]
    cases += [
        np.full((512, 512, 3), 128, np.uint8),
        np.full((300, 400, 3), (250, 20, 30), np.uint8),
        rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        np.kron((np.indices((32, 32)).sum(0) % 2).astype(np.uint8) * 255, np.ones((16, 16), np.uint8))[:, :, None].repeat(3, 2),
    ]
    for number, image in enumerate(cases):
        assert not watermark_detect(image), number
        assert watermark_bit_errors(image) > WATERMARK_MAX_BIT_ERRORS, number


def test_watermark_needs_a_large_enough_image():
    small = photo_like(200, 300)
    with pytest.raises(ValueError, match="too small"):
        watermark_embed(small)
    assert not watermark_detect(small)
    with pytest.raises(ValueError):
        watermark_embed(np.zeros((512, 512), np.uint8))
    # encode_synthetic still marks a small image as synthetic in its metadata.
    data = encode_synthetic(small, format="JPEG", generator="test")
    assert read_digital_source_type(data) == TRAINED_ALGORITHMIC_MEDIA


# ----------------------------------------------------------------------------------------------
# encode_synthetic: metadata
# ----------------------------------------------------------------------------------------------


def pillow_xmp(data: bytes) -> str:
    """The XMP packet as Pillow (an independent reader) sees it."""
    with PILImage.open(io.BytesIO(data)) as image:
        image.load()
        value = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def assert_no_exif(data: bytes) -> None:
    with PILImage.open(io.BytesIO(data)) as image:
        image.load()
        assert len(image.getexif()) == 0
        assert "exif" not in image.info and "icc_profile" not in image.info
    assert b"Exif\x00\x00" not in data and b"eXIf" not in data and b"EXIF" not in data


@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_synthetic_marks_every_format(fmt):
    image = photo_like(512, 640, seed=4)
    data = encode_synthetic(image, format=fmt, quality=92, generator="stylegan-ffhq-1024", extra={"Seed": 42})
    decoded = load_image(data)
    assert decoded.format == fmt.lower() and decoded.size == (640, 512)
    assert psnr(image, decoded.pixels) > 30
    assert watermark_detect(decoded.pixels)
    assert read_digital_source_type(data) == TRAINED_ALGORITHMIC_MEDIA
    xmp = pillow_xmp(data)
    assert 'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"' in xmp
    assert 'xmp:CreatorTool="SafeFace (stylegan-ffhq-1024)"' in xmp
    assert "<safeface:Seed>42</safeface:Seed>" in xmp
    assert_no_exif(data)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_encode_synthetic_keeps_alpha(fmt):
    image = photo_like(300, 300, seed=5)
    alpha = np.full((300, 300), 255, np.uint8)
    alpha[:, :100] = 0
    data = encode_synthetic(np.dstack([image, alpha]), format=fmt, generator="swap-test")
    decoded = load_image(data)
    assert decoded.alpha is not None and decoded.alpha[150, 50] == 0 and decoded.alpha[150, 250] == 255
    assert read_digital_source_type(data) == TRAINED_ALGORITHMIC_MEDIA
    assert "SafeFace (swap-test)" in pillow_xmp(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_has_no_exif_or_gps_from_a_photo_that_had_them(fmt):
    exif = PILImage.Exif()
    exif[0x010F] = "AcmeCam"  # Make
    exif[0x0110] = "Model X9"  # Model
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 33.5), 3: "E", 4: (4.0, 53.0, 12.25)})
    buffer = io.BytesIO()
    PILImage.fromarray(photo_like(400, 600, seed=6)).save(buffer, "JPEG", quality=90, exif=exif)
    photo = buffer.getvalue()
    with PILImage.open(io.BytesIO(photo)) as check:  # the input really carries GPS
        assert check.getexif().get_ifd(0x8825)[2] == (52.0, 22.0, 33.5)

    data = encode_synthetic(
        load_image(photo).pixels, format=fmt, generator="swap-test",
        digital_source_type=COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    )
    assert_no_exif(data)
    assert b"AcmeCam" not in data and b"Model X9" not in data
    assert read_digital_source_type(data) == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA


def test_read_digital_source_type_of_other_files():
    plain = save_image(photo_like(64, 64), "jpeg")
    assert read_xmp(plain) is None and read_digital_source_type(plain) is None
    assert read_digital_source_type(b"") is None
    assert read_digital_source_type(b"not an image at all") is None
    other = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
    assert read_digital_source_type(insert_xmp(plain, other)) is None
    assert read_digital_source_type(insert_xmp(plain, b"<broken")) is None
    # The element form some editors write is read too.
    element_form = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
        "<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
        "</Iptc4xmpExt:DigitalSourceType></rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()
    for fmt in ("jpeg", "png", "webp"):
        data = insert_xmp(save_image(photo_like(64, 64), fmt), element_form)
        assert read_digital_source_type(data) == "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
        assert load_image(data).size == (64, 64)


def test_encode_synthetic_refuses_bad_arguments():
    image = photo_like(64, 64)
    with pytest.raises(ValueError):
        encode_synthetic(image, format="GIF", generator="test")
    with pytest.raises(ValueError):
        encode_synthetic(image, generator="")
    with pytest.raises(ValueError):
        encode_synthetic(image, generator="test", extra={"not a name": 1})
    with pytest.raises(ValueError):
        encode_synthetic(image.astype(np.float32), generator="test")


def test_encode_avatar_image_1024_timing():
    image = photo_like(1024, 1024, seed=8)
    started = time.perf_counter()
    marked = watermark_embed(image)
    watermark_seconds = time.perf_counter() - started
    started = time.perf_counter()
    data = encode_avatar_image(image, generator="stylegan-ffhq-1024", seed=987654)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    decoded = load_image(data)
    detected = watermark_detect(decoded.pixels)
    detect_seconds = time.perf_counter() - started
    print(
        f"\nencode_avatar_image 1024x1024: {seconds * 1000:.0f} ms "
        f"(watermark alone {watermark_seconds * 1000:.0f} ms), {len(data) / 1024:.0f} KiB PNG; "
        f"decode + detect {detect_seconds * 1000:.0f} ms"
    )
    assert decoded.format == "png" and np.array_equal(decoded.pixels, marked)
    assert detected
    assert "<safeface:Seed>987654</safeface:Seed>" in pillow_xmp(data)
    assert read_digital_source_type(data) == TRAINED_ALGORITHMIC_MEDIA


# ----------------------------------------------------------------------------------------------
# C2PA
# ----------------------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SafeFace tests"),
    ])


def _key_usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=not signing,
        crl_sign=not signing, encipher_only=False, decipher_only=False,
    )


def make_chain(tmp_path):
    """A throwaway CA and an end-entity signing certificate as C2PA wants it: v3, CA:false,
    critical key usage digitalSignature, extended key usage emailProtection, key identifiers."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("SafeFace test CA")).issuer_name(_name("SafeFace test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name("SafeFace test signer")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    cert_path, key_path = tmp_path / "chain.pem", tmp_path / "signer.key"
    cert_path.write_bytes(cert.public_bytes(pem) + ca_pem)
    key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path, ca_pem


def read_manifest(data: bytes, mime: str, trust_anchors: bytes) -> tuple[dict, str]:
    settings = c2pa.Settings.from_dict({
        "trust": {"trust_anchors": trust_anchors.decode()},
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    })
    with c2pa.Context(settings=settings) as context, c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
        return json.loads(reader.json()), reader.get_validation_state()


@pytest.mark.parametrize("fmt, mime", [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")])
def test_c2pa_manifest_round_trip(tmp_path, fmt, mime):
    cert_path, key_path, ca_pem = make_chain(tmp_path)
    config = c2pa_config_from_env({"SAFEFACE_C2PA_CERT": str(cert_path), "SAFEFACE_C2PA_KEY": str(key_path)})
    assert config is not None and config.algorithm == "es256"
    image = photo_like(512, 512, seed=9)
    started = time.perf_counter()
    data = encode_synthetic(image, format=fmt, generator="stylegan-ffhq-1024", c2pa=config)
    print(f"\n{fmt} with C2PA: {(time.perf_counter() - started) * 1000:.0f} ms, {len(data) / 1024:.0f} KiB")

    store, state = read_manifest(data, mime, ca_pem)
    assert state == "Trusted"  # valid signature, chains to the CA we trust, data hash matches
    manifest = store["manifests"][store["active_manifest"]]
    actions = [a for assertion in manifest["assertions"] if assertion["label"].startswith("c2pa.actions")
               for a in assertion["data"]["actions"]]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert manifest["signature_info"]["common_name"] == "SafeFace test signer"
    # The other marks are still there, and the file is still a plain image.
    assert read_digital_source_type(data) == TRAINED_ALGORITHMIC_MEDIA
    decoded = load_image(data)
    assert decoded.format == fmt.lower() and watermark_detect(decoded.pixels)
    assert_no_exif(data)


def test_c2pa_detects_a_changed_image(tmp_path):
    cert_path, key_path, ca_pem = make_chain(tmp_path)
    config = C2PAConfig.from_files(cert_path, key_path)
    data = encode_avatar_image(photo_like(512, 512, seed=10), generator="stylegan-ffhq-1024", seed=1, c2pa=config)
    assert read_manifest(data, "image/png", ca_pem)[1] == "Trusted"
    idat = data.index(b"IDAT")
    changed = bytearray(data)
    changed[idat + 100] ^= 0xFF
    assert read_manifest(bytes(changed), "image/png", ca_pem)[1] == "Invalid"


def test_c2pa_config_from_env(tmp_path):
    cert_path, key_path, _ = make_chain(tmp_path)
    assert c2pa_config_from_env({}) is None
    assert c2pa_config_from_env({"SAFEFACE_C2PA_CERT": "", "SAFEFACE_C2PA_KEY": " "}) is None
    with pytest.raises(ValueError, match="SAFEFACE_C2PA_KEY must be set"):
        c2pa_config_from_env({"SAFEFACE_C2PA_CERT": str(cert_path)})
    with pytest.raises(ValueError, match="SAFEFACE_C2PA_CERT must be set"):
        c2pa_config_from_env({"SAFEFACE_C2PA_KEY": str(key_path)})
    with pytest.raises(ValueError, match="SAFEFACE_C2PA_CERT=.* is not a readable file"):
        c2pa_config_from_env({"SAFEFACE_C2PA_CERT": str(tmp_path / "nope.pem"), "SAFEFACE_C2PA_KEY": str(key_path)})
    other_key = tmp_path / "other.key"
    other_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ValueError, match="does not belong"):
        c2pa_config_from_env({"SAFEFACE_C2PA_CERT": str(cert_path), "SAFEFACE_C2PA_KEY": str(other_key)})
    lone = tmp_path / "lone.pem"
    lone.write_bytes(cert_path.read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="chain"):
        c2pa_config_from_env({"SAFEFACE_C2PA_CERT": str(lone), "SAFEFACE_C2PA_KEY": str(key_path)})
    with pytest.raises(ValueError, match="no PEM certificate"):
        c2pa_config_from_env({"SAFEFACE_C2PA_CERT": str(key_path), "SAFEFACE_C2PA_KEY": str(key_path)})


# ----------------------------------------------------------------------------------------------
# real corpus (SAFEFACE_CORPUS)
# ----------------------------------------------------------------------------------------------


@pytest.mark.corpus
def test_corpus_photos_carry_no_watermark_and_keep_ours_through_jpeg(corpus):
    faces = sorted((corpus / "faces").iterdir())
    checked, worst = 0, 0
    for number, path in enumerate(faces):
        photo = load_image(path).pixels
        longest = 1024 if number % 2 else 512
        scale = min(1.0, longest / max(photo.shape[:2]))
        if scale < 1.0:
            photo = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        if photo.shape[0] * photo.shape[1] < 256 * 256:
            continue
        assert not watermark_detect(photo), path.name
        errors = watermark_bit_errors(jpeg_round_trip(watermark_embed(photo), 85))
        assert errors <= WATERMARK_MAX_BIT_ERRORS, (path.name, errors)
        checked, worst = checked + 1, max(worst, errors)
    print(f"\n{checked} corpus photos: none carried the mark; ours survived JPEG q85 in all "
          f"(at most {worst} of 64 bits wrong)")
    assert checked >= 15


def _reference_dwt_dct_svd():
    """invisible-watermark's own dwtDctSvd class, loaded from its file (the package __init__
    imports torch for rivaGan)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("imwatermark")
    path = Path(list(spec.submodule_search_locations)[0]) / "dwtDctSvd.py"
    module_spec = importlib.util.spec_from_file_location("_reference_dwtdctsvd", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.EmbedDwtDctSvd


def test_vectorised_watermark_matches_the_reference_implementation():
    from engine.media import provenance

    rng = np.random.default_rng(3)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (516, 771, 3), dtype=np.uint8), (7, 7), 2)
    bits = [int(b) for b in np.unpackbits(np.frombuffer(provenance.WATERMARK_TEXT, np.uint8))]
    reference = _reference_dwt_dct_svd()(bits, wmLen=64, scales=[0, provenance._WATERMARK_SCALE, 0])
    expected = reference.encode(np.ascontiguousarray(rgb[:, :, ::-1]))[:, :, ::-1]
    ours = provenance.watermark_embed(rgb)
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    assert np.mean(ours != expected) < 1e-4
    decoder = _reference_dwt_dct_svd()([], wmLen=64, scales=[0, provenance._WATERMARK_SCALE, 0])
    assert np.packbits(np.asarray(decoder.decode(np.ascontiguousarray(ours[:, :, ::-1])), np.uint8)).tobytes() == provenance.WATERMARK_TEXT
    assert provenance.watermark_read(expected.copy()) == provenance.WATERMARK_TEXT
