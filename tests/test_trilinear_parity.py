"""Hand-written trilinear sampling (as a TensorRT-bound export writes it) against native
ONNX GridSample with align_corners=True and zero padding."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.onnx_builders import sampler_model


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _points(rng: np.random.Generator, res: int) -> np.ndarray:
    inner = rng.uniform(-1, 1, (2000, 3))
    faces = rng.uniform(-1, 1, (600, 3))
    faces[np.arange(600), rng.integers(0, 3, 600)] = rng.choice([-1.0, 1.0], 600)
    edges = rng.choice([-1.0, 1.0], (300, 3))
    edges[:, 0] = rng.uniform(-1, 1, 300)
    grid = (rng.integers(0, res, (300, 3)) / (res - 1) * 2 - 1).astype(np.float64)
    outside = rng.uniform(-1.6, 1.6, (600, 3))
    just_out = rng.choice([-1.0, 1.0], (200, 3)) * (1 + rng.uniform(1e-4, 0.05, (200, 3)))
    return np.concatenate([inner, faces, edges, grid, outside, just_out]).astype(np.float32)


@pytest.mark.parametrize("res", [5, 17])
def test_plain_ops_match_native_gridsample(res: int) -> None:
    rng = np.random.default_rng(res)
    vol = rng.uniform(0, 1, (1, res, res, res)).astype(np.float32)
    p = _points(rng, res)[None]
    native = _session(sampler_model("native")).run(["v"], {"x": vol, "p": p})[0]
    plain = _session(sampler_model("plain")).run(["v"], {"x": vol, "p": p})[0]
    assert native.shape == plain.shape == (1, p.shape[1])
    np.testing.assert_allclose(plain, native, atol=1e-5, rtol=0)
    far = np.abs(p[0]).max(axis=1) > 1 + 1.0 / (res - 1) * 2
    assert far.any() and np.all(native[0, far] == 0) and np.all(plain[0, far] == 0)


def test_sampler_reads_grid_points_in_ifnet_order() -> None:
    """p = 2*(z, y, x) of a grid point returns exactly vol[x, y, z] (align_corners=True)."""
    res = 9
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 1, (1, res, res, res)).astype(np.float32)
    ijk = rng.integers(0, res, (50, 3))
    unit = ijk / (res - 1) - 0.5
    p = (2 * unit[:, ::-1]).astype(np.float32)[None]
    for kind in ("native", "plain"):
        got = _session(sampler_model(kind)).run(["v"], {"x": vol, "p": p})[0][0]
        np.testing.assert_allclose(got, vol[0, ijk[:, 0], ijk[:, 1], ijk[:, 2]], atol=1e-6)
    misaligned = _session(sampler_model("native", align_corners=False))
    got = misaligned.run(["v"], {"x": vol, "p": p})[0][0]
    assert np.abs(got - vol[0, ijk[:, 0], ijk[:, 1], ijk[:, 2]]).max() > 0.05
