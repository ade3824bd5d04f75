"""Plain values the apps store from engine results: identity embeddings as bytes, and engine
measurements (numpy scalars and arrays, tuples) as JSON."""
from __future__ import annotations

import math

import numpy as np

EMBEDDING_DIM = 128  # the dlib identity descriptor


def embedding_to_bytes(embedding: np.ndarray) -> bytes:
    vector = np.asarray(embedding, dtype="<f4").reshape(-1)
    if vector.shape != (EMBEDDING_DIM,):
        raise ValueError(f"an identity embedding has {EMBEDDING_DIM} values, not {vector.size}")
    return vector.tobytes()


def embedding_from_bytes(data: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(data), dtype="<f4").astype(np.float32)


def jsonable(value, *, digits: int | None = None):
    """``value`` as plain JSON values: numpy scalars and arrays become numbers and lists, tuples
    lists, keys strings; NaN and infinities (not JSON) become None; floats are rounded to
    ``digits`` when given."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, digits=digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, digits=digits) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), digits=digits)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, digits) if digits is not None else value
    return value
