"""engine.faces.dlib_resnet: dlib's face descriptor ResNet read from its .dat and run on OpenVINO
must give dlib's own descriptors (max abs difference < 1e-3), and a damaged .dat must raise
ModelCorrupt."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.errors import ModelCorrupt, ModelMissing

ENCODER = "dlib_face_recognition_resnet_model_v1.dat"
PREDICTOR = "shape_predictor_5_face_landmarks.dat"
TOLERANCE = 1e-3
FACE_RECT = (312, 362, 712, 762)  # roughly covers a generated 1024 px face
SEEDS = (1, 2, 3)


def _model(name: str):
    from engine.models import model_path

    try:
        return model_path(name)
    except ModelMissing as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def dat_path():
    return _model(ENCODER)


@pytest.fixture(scope="module")
def net(dat_path):
    from engine.faces.dlib_resnet import DlibResNet

    return DlibResNet.load(dat_path)


@pytest.fixture(scope="module")
def encoder(dat_path):
    import dlib

    return dlib.face_recognition_model_v1(str(dat_path))


@pytest.fixture(scope="module")
def faces():
    """(image, 5-point shape) for a few generated faces."""
    import dlib

    from engine.generate.stylegan import generate_face

    predictor = dlib.shape_predictor(str(_model(PREDICTOR)))
    result = []
    for seed in SEEDS:
        try:
            image = np.ascontiguousarray(generate_face(seed))
        except ModelMissing as error:
            pytest.skip(str(error))
        result.append((image, predictor(image, dlib.rectangle(*FACE_RECT))))
    return result


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def test_generated_faces_match_dlib(net, encoder, faces):
    from engine.faces.dlib_resnet import chip_from_shape

    chips = []
    for image, shape in faces:
        chip = chip_from_shape(image, shape)
        assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
        ours = net.embed_chips(chip[None])
        assert ours.shape == (1, 128) and ours.dtype == np.float64
        # dlib on the same chip, and dlib's full path (its own alignment of the whole image).
        assert _max_diff(ours[0], encoder.compute_face_descriptor(chip)) < TOLERANCE
        assert _max_diff(ours[0], encoder.compute_face_descriptor(image, shape, 0, 0.25)) < TOLERANCE
        chips.append(chip)
    batch = net.embed_chips(np.stack(chips))
    reference = np.array(encoder.compute_face_descriptor(chips))
    assert batch.shape == (len(chips), 128)
    assert _max_diff(batch, reference) < TOLERANCE
    # Different people really are different (the test faces are not degenerate).
    assert np.linalg.norm(batch[0] - batch[1]) > 0.3


def test_noise_chips_match_dlib(net, encoder):
    rng = np.random.default_rng(20240607)
    chips = np.concatenate(
        [
            rng.integers(0, 256, (3, 150, 150, 3), dtype=np.uint8),
            np.zeros((1, 150, 150, 3), np.uint8),
            np.full((1, 150, 150, 3), 255, np.uint8),
        ]
    )
    ours = net.embed_chips(chips)
    reference = np.array(encoder.compute_face_descriptor(list(chips)))
    assert _max_diff(ours, reference) < TOLERANCE
    singles = np.concatenate([net.embed_chips(chip[None]) for chip in chips])
    assert _max_diff(ours, singles) < 1e-5


def test_concurrent_calls_are_safe(net):
    chips = np.random.default_rng(7).integers(0, 256, (4, 150, 150, 3), dtype=np.uint8)
    expected = [net.embed_chips(chip[None]) for chip in chips]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        for _ in range(3):
            results[index] = net.embed_chips(chips[index][None])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chips))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, vector in enumerate(expected):
        assert _max_diff(results[index], vector) < 1e-6


def test_load_is_cached_and_input_is_checked(net, dat_path):
    from engine.faces.dlib_resnet import DlibResNet

    assert DlibResNet.load(dat_path) is net
    assert net.embed_chips(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError):
        net.embed_chips(np.zeros((150, 150, 3), np.uint8))
    with pytest.raises(ValueError):
        net.embed_chips(np.zeros((1, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError):
        net.embed_chips(np.zeros((1, 150, 150, 3), np.float32))


def test_truncated_file_raises_model_corrupt(dat_path, tmp_path):
    from engine.faces.dlib_resnet import DlibResNet

    data = dat_path.read_bytes()
    truncated = tmp_path / ENCODER
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelCorrupt, match="truncated"):
        DlibResNet.load(truncated)
    assert not truncated.with_suffix(".xml").exists()


@pytest.mark.parametrize("cut", [0, 1, 40, 300, 400, 1 << 20, -1])
def test_damaged_bytes_raise_model_corrupt(dat_path, cut):
    from engine.faces.dlib_resnet import parse_network

    data = dat_path.read_bytes()
    with pytest.raises(ModelCorrupt):
        parse_network(data[:cut])


def test_wrong_format_raises_model_corrupt(dat_path):
    from engine.faces.dlib_resnet import parse_network

    data = dat_path.read_bytes()
    with pytest.raises(ModelCorrupt):
        parse_network(data + b"\x00")  # trailing bytes
    with pytest.raises(ModelCorrupt):
        parse_network(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelCorrupt):
        parse_network(_model(PREDICTOR).read_bytes()[:65536])  # another dlib file
