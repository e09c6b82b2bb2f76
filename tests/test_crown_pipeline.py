"""Crown pipeline end to end on analytic ONNX models: placement in mm, conventions, two-part
models, coarse-to-fine, smoothing, cancellation and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from app.core.crown import decode, pipeline
from app.core.crown.decode import decision_level, to_model_points
from app.core.crown.frame import CaseFrame, FrameTransform
from app.core.crown.meshio import Mesh, load_mesh
from app.core.crown.pipeline import generate_crown, run_crown
from app.core.crown.smoothing import smooth
from app.core.crown.surface import (
    evaluate_coarse_to_fine,
    evaluate_dense,
    extract_surface,
    signed_volume,
)
from app.core.errors import Cancelled, InputError, ModelError, PipelineError
from app.core.manifest import load_manifest
from app.core.report import CancelToken
from app.core.runtime import RuntimeConfig, SessionPool
from tests.onnx_builders import (
    crown_manifest,
    identity_crown_model,
    save,
    two_part_identity_models,
    write_manifest,
)

CENTER = np.array([37.0, -12.0, 58.0])
HALF = np.array([4.5, 3.0, 6.5])
ROT = trimesh.transformations.rotation_matrix(0.5, [1, 2, 3])[:3, :3]
VOX, GEN, SIZE = 24, 70, 19.0
# The identity model reads the solid voxels back. Their outermost points lie within h/2 of the
# surface on either side, so the level where the interpolated occupancy is 0.9 (logit 4 with
# k = 10) sits on the surface on average; 0.5 would sit half a cell outside.
THRESHOLD = float(1 / (1 + np.exp(-4.0)))


def _box_scan() -> Mesh:
    """A 9 x 6 x 13 mm box, turned about a skew axis, centred far from the origin."""
    T = np.eye(4)
    T[:3, :3] = ROT
    T[:3, 3] = CENTER
    box = trimesh.creation.box(2 * HALF, transform=T)
    return Mesh(np.asarray(box.vertices, float), np.asarray(box.faces, np.int64))


def _signed_box_distance(points_mm: np.ndarray) -> np.ndarray:
    q = np.abs((points_mm - CENTER) @ ROT) - HALF
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)


@pytest.fixture
def pool() -> SessionPool:
    return SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=2))


def _model(tmp_path: Path, onnx_model=None, stem="identity", **overrides):
    onnx_name = f"{stem}.onnx"
    save(onnx_model if onnx_model is not None else identity_crown_model(), tmp_path / onnx_name)
    data = crown_manifest(
        tmp_path,
        onnx_name,
        voxel_resolution=VOX,
        frame={"mode": "fixed", "size_mm": SIZE, "center": "bbox"},
        generation={"resolution": GEN, "threshold": THRESHOLD, "batch_points": 150_000},
    )
    data.update(overrides)
    return load_manifest(write_manifest(tmp_path, data, stem))


def _placement_error(mesh: Mesh) -> tuple[float, float]:
    """(mean |distance|, mean signed distance) of the crown's vertices to the box, in voxels."""
    h = SIZE / (VOX - 1)
    d = _signed_box_distance(mesh.vertices)
    return float(np.abs(d).mean() / h), float(d.mean() / h)


def _placed_right(mesh: Mesh) -> bool:
    """The distance check: within a third of a voxel on average, and no systematic offset."""
    mean_abs, mean_signed = _placement_error(mesh)
    return mean_abs < 1 / 3 and abs(mean_signed) < 1 / 8


class _FrameWithoutCentre(FrameTransform):
    def to_mm(self, points_unit: np.ndarray) -> np.ndarray:
        return np.asarray(points_unit) / self.scale


@pytest.mark.parametrize("sampler", ["native", "plain"])
def test_identity_model_returns_the_scan_where_it_was(tmp_path, pool, sampler) -> None:
    model = _model(tmp_path, identity_crown_model(sampler))
    result = generate_crown(_box_scan(), model, pool)
    mean_abs, mean_signed = _placement_error(result.mesh)
    print(f"{sampler}: mean |d| {mean_abs:.3f} voxel, mean signed d {mean_signed:+.3f} voxel")
    assert mean_abs < 1 / 3, mean_abs
    assert abs(mean_signed) < 1 / 8, mean_signed
    assert result.watertight
    assert result.report.info["decoder_points"] == GEN**3
    assert result.report.providers == ["cpu"]
    assert signed_volume(result.mesh.vertices, result.mesh.faces) == pytest.approx(
        np.prod(2 * HALF), rel=0.08
    )


@pytest.mark.parametrize(
    "broken",
    [
        "unit_vs_ifnet_convention",
        "xyz_instead_of_zyx",
        "frame_centre_not_inverted",
        "align_corners_false",
    ],
)
def test_placement_check_catches_each_known_mistake(tmp_path, pool, monkeypatch, broken) -> None:
    if broken == "unit_vs_ifnet_convention":
        model = _model(tmp_path, point_convention="unit")
    elif broken == "xyz_instead_of_zyx":
        model = _model(tmp_path)
        monkeypatch.setattr(
            decode, "to_model_points", lambda p, c: (2.0 * np.asarray(p)).astype(np.float32)
        )
    elif broken == "align_corners_false":
        model = _model(tmp_path, identity_crown_model(align_corners=False))
    else:
        model = _model(tmp_path)
        real = pipeline.make_frame

        def make_frame(*args, **kwargs):
            f = real(*args, **kwargs)
            return _FrameWithoutCentre(f.center, f.scale)

        monkeypatch.setattr(pipeline, "make_frame", make_frame)
    result = generate_crown(_box_scan(), model, pool)
    mean_abs, mean_signed = _placement_error(result.mesh)
    print(f"{broken}: mean |d| {mean_abs:.3f} voxel, mean signed d {mean_signed:+.3f} voxel")
    assert not _placed_right(result.mesh)
    # clearly outside, not on the edge: 1.5x either bound (align_corners=False, the subtlest,
    # shrinks the crown towards the frame centre by |u| voxels: about -0.23 voxel here)
    assert mean_abs > 1.5 / 3 or abs(mean_signed) > 1.5 / 8


def test_two_part_model_runs_encoder_once_and_matches_one_graph(tmp_path, pool) -> None:
    encoder, decoder = two_part_identity_models()
    save(encoder, tmp_path / "enc.onnx")
    save(decoder, tmp_path / "dec.onnx")
    data = crown_manifest(
        tmp_path,
        None,
        encoder_onnx="enc.onnx",
        decoder_onnx="dec.onnx",
        features=["feat", "feat_half"],
        voxel_resolution=VOX,
        frame={"mode": "fixed", "size_mm": SIZE, "center": "bbox"},
        generation={"resolution": 40, "threshold": THRESHOLD, "batch_points": 10_000},
    )
    two = load_manifest(write_manifest(tmp_path, data, "two"))
    calls: dict[str, int] = {}
    real_get = pool.get

    def counting_get(path):
        session = real_get(path)
        if getattr(session, "counted", False):
            return session
        session.counted = True
        inner = session.run

        def run(outputs, feeds):
            calls[Path(path).name] = calls.get(Path(path).name, 0) + 1
            return inner(outputs, feeds)

        session.run = run
        return session

    pool.get = counting_get
    got = generate_crown(_box_scan(), two, pool)
    assert calls["enc.onnx"] == 1
    batch = got.report.info["batch_points"]
    assert batch <= 10_000
    assert calls["dec.onnx"] == got.report.info["batches"] == -(-(40**3) // batch)
    assert "encode" in got.report.timings_ms
    pool.get = real_get
    one = _model(tmp_path, generation={"resolution": 40, "threshold": THRESHOLD,
                                       "batch_points": 64_000})  # fmt: skip
    ref = generate_crown(_box_scan(), one, pool)
    np.testing.assert_allclose(got.mesh.vertices, ref.mesh.vertices, atol=1e-5)
    np.testing.assert_array_equal(got.mesh.faces, ref.mesh.faces)


def test_unit_convention_and_probability_outputs_give_the_same_crown(tmp_path, pool) -> None:
    ref = generate_crown(_box_scan(), _model(tmp_path), pool)
    unit = _model(
        tmp_path, identity_crown_model(convention="unit"), stem="unit", point_convention="unit"
    )
    prob = _model(
        tmp_path,
        identity_crown_model(output_kind="probability"),
        stem="prob",
        output_kind="probability",
        generation={"resolution": GEN, "threshold": 0.9, "batch_points": 150_000},
    )
    for model in (unit, prob):
        got = generate_crown(_box_scan(), model, pool)
        assert abs(len(got.mesh.faces) - len(ref.mesh.faces)) <= 0.001 * len(ref.mesh.faces)
        assert _nearest_vertex_gap(got.mesh, ref.mesh) < 1e-3


def _nearest_vertex_gap(a: Mesh, b: Mesh) -> float:
    """Largest distance (mm) from a vertex of either mesh to the nearest vertex of the other."""
    from scipy.spatial import cKDTree

    ab = cKDTree(b.vertices).query(a.vertices)[0].max()
    ba = cKDTree(a.vertices).query(b.vertices)[0].max()
    return float(max(ab, ba))


def test_coarse_to_fine_matches_dense_with_fewer_points(tmp_path, pool) -> None:
    """Bound: >= 99.9 % of grid points on the same side of the level, every vertex within
    0.01 voxel of a dense-mesh vertex, and under 40 % of the dense decoder points."""
    scan = _box_scan()
    sphere = trimesh.creation.icosphere(3, radius=2.0)
    sphere.apply_translation(CENTER + [5.5, 5.0, -4.0])
    scan = Mesh(
        np.concatenate([scan.vertices, sphere.vertices]),
        np.concatenate([scan.faces, sphere.faces + len(scan.vertices)]),
    )
    res, coarse = 73, 19
    gen = {"resolution": res, "threshold": THRESHOLD, "batch_points": 200_000}
    dense = generate_crown(scan, _model(tmp_path, generation=gen), pool)
    c2f_model = _model(tmp_path, stem="c2f", generation={**gen, "coarse_resolution": coarse})
    c2f = generate_crown(scan, c2f_model, pool)
    assert c2f.report.info["coarse_levels"] == [19, 37, 73]
    assert c2f.report.info["decoder_points"] < 0.4 * dense.report.info["decoder_points"]
    assert c2f.watertight
    assert len(c2f.mesh.faces) == len(dense.mesh.faces)
    assert _nearest_vertex_gap(c2f.mesh, dense.mesh) < 0.01 * SIZE / (VOX - 1)

    rng = np.random.default_rng(1)
    vox = (rng.uniform(size=(20, 20, 20)) > 0.7).astype(np.float32)
    from scipy.ndimage import map_coordinates

    def field(p):
        return map_coordinates(vox, ((p + 0.5) * 19).T, order=1) - 0.5

    full = evaluate_dense(field, res)
    fast, stats = evaluate_coarse_to_fine(field, res, coarse, 0.0)
    assert ((full > 0) == (fast > 0)).mean() >= 0.999
    assert sum(stats.evaluated) < full.size


def test_no_surface_in_the_frame_is_a_pipeline_error(tmp_path, pool) -> None:
    with pytest.raises(PipelineError, match="no crown in the frame"):
        generate_crown(_box_scan(), _model(tmp_path), pool, center=[500.0, 0.0, 0.0])
    scan = _box_scan()
    src = tmp_path / "scan.stl"
    src.write_bytes(trimesh.Trimesh(scan.vertices, scan.faces).export(file_type="stl"))
    with pytest.raises(PipelineError, match="check the frame centre") as err:
        run_crown(src, tmp_path / "o.stl", _model(tmp_path), pool, center=[500.0, 0.0, 0.0])
    assert err.value.path == src and not (tmp_path / "o.stl").exists()


def test_model_without_the_named_input_is_a_model_error(tmp_path, pool) -> None:
    model = _model(tmp_path, inputs={"voxels": "voxels", "points": "p"})
    with pytest.raises(ModelError, match="no input named 'voxels'"):
        generate_crown(_box_scan(), model, pool)


def test_model_with_another_static_grid_size_is_a_model_error(tmp_path, pool) -> None:
    model = _model(tmp_path, identity_crown_model(static_resolution=VOX + 8))
    with pytest.raises(ModelError, match=f"voxel_resolution is {VOX}"):
        generate_crown(_box_scan(), model, pool)
    fitting = _model(tmp_path, identity_crown_model(static_resolution=VOX), stem="fits")
    assert generate_crown(_box_scan(), fitting, pool).watertight


def test_cancel_between_batches_and_progress_reported(tmp_path, pool) -> None:
    model = _model(tmp_path, generation={"resolution": 40, "threshold": THRESHOLD,
                                         "batch_points": 5_000})  # fmt: skip
    token = CancelToken()
    seen: list[tuple[str, float]] = []

    def progress(stage: str, fraction: float) -> None:
        seen.append((stage, fraction))
        if stage == "decode" and fraction > 0.3:
            token.cancel()

    with pytest.raises(Cancelled):
        generate_crown(_box_scan(), model, pool, cancel=token, progress=progress)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and 0.3 < fractions[-1] < 0.9


def test_run_crown_writes_stl_in_mm_and_never_over_the_input(tmp_path, pool) -> None:
    scan = _box_scan()
    src = tmp_path / "scan.stl"
    src.write_bytes(trimesh.Trimesh(scan.vertices, scan.faces).export(file_type="stl"))
    model = _model(tmp_path, smoothing={"method": "taubin", "iterations": 10})
    out = tmp_path / "out" / "crown.stl"
    stages: list[str] = []
    result = run_crown(src, out, model, pool, progress=lambda s, f: stages.append(s))
    assert result.output == out and stages[0] == "load" and stages[-1] == "write"
    back = load_mesh(out)
    assert back.faces.shape == result.mesh.faces.shape
    assert _placed_right(back)
    for key in ("load", "frame", "voxelize", "decode", "extract", "smooth", "write"):
        assert key in result.report.timings_ms
    with pytest.raises(InputError, match="output path is the input"):
        run_crown(src, src, model, pool)


@pytest.mark.parametrize("method", ["laplacian", "taubin"])
def test_smoothing_keeps_volume_and_reduces_roughness(method: str) -> None:
    rng = np.random.default_rng(0)
    sphere = trimesh.creation.icosphere(4, radius=1.0)
    v = sphere.vertices * (1 + rng.uniform(-0.03, 0.03, (len(sphere.vertices), 1)))
    out = smooth(v, sphere.faces, method, 10)
    r_before = np.linalg.norm(v, axis=1).std()
    r_after = np.linalg.norm(out, axis=1).std()
    assert r_after < 0.5 * r_before
    vol = signed_volume(v, sphere.faces)
    assert signed_volume(out, sphere.faces) == pytest.approx(vol, rel=0.03)
    assert np.array_equal(smooth(v, sphere.faces, "none", 10), v)


def test_extract_surface_closes_at_the_box_and_faces_outward() -> None:
    values = np.full((9, 9, 9), 5.0, np.float32)
    verts, faces = extract_surface(values, 0.0)
    np.testing.assert_allclose(verts.min(axis=0), -0.5, atol=1e-5)
    np.testing.assert_allclose(verts.max(axis=0), 0.5, atol=1e-5)
    assert signed_volume(verts, faces) == pytest.approx(1.0, rel=1e-3)
    assert trimesh.Trimesh(verts, faces).is_watertight
    assert extract_surface(np.zeros((9, 9, 9), np.float32), 0.0) is None


def _same_triangles(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    """Two meshes with the same vertices (to float32 rounding) and the same oriented triangles,
    in any order."""
    from scipy.spatial import cKDTree

    (va, fa), (vb, fb) = a, b
    assert len(va) == len(vb) and len(fa) == len(fb)
    dist, match = cKDTree(vb).query(va)
    assert dist.max() < 1e-4 and len(np.unique(match)) == len(va)  # one to one
    fa = match[fa]

    def canonical(f: np.ndarray) -> np.ndarray:
        f = np.stack([np.roll(t, -int(t.argmin())) for t in f])  # orientation kept
        return f[np.lexsort(f.T[::-1])]

    np.testing.assert_array_equal(canonical(fa), canonical(fb))


@pytest.mark.parametrize("shape", ["blobs", "quantised", "box"])
def test_marching_cubes_in_slabs_gives_the_triangles_of_one_call(shape: str) -> None:
    """Slabs (so the interpreter is let go between them) against one call of scikit-image's
    marching cubes on the same padded grid, both followed by the grid-point merge: the same
    vertices and triangles."""
    from skimage.measure import marching_cubes

    from app.core.crown.surface import (
        PAD_VALUE,
        _merge_grid_point_vertices,
        marching_cubes_in_slabs,
    )

    g = np.linspace(-1, 1, 70)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    if shape == "blobs":
        values = np.sin(4 * x) * np.cos(3 * y) + np.sin(5 * z) - 0.2
    elif shape == "quantised":  # many values exactly at the level
        values = np.round((0.7 - np.sqrt(x**2 + (1.4 * y) ** 2 + z**2)) * 8) / 8
    else:
        values = np.full(x.shape, 5.0)
    grid = np.pad(values.astype(np.float32), 1, constant_values=PAD_VALUE)
    one_v, one_f = marching_cubes(grid, level=0.0)[:2]
    one = _merge_grid_point_vertices(one_v.astype(np.float64), one_f.astype(np.int64))
    for slab in (7, 16, 32):
        v, f = marching_cubes_in_slabs(grid, 0.0, slab=slab)
        assert v.dtype == np.float64 and f.dtype == np.int64
        _same_triangles(_merge_grid_point_vertices(v, f), one)
    assert marching_cubes_in_slabs(np.full((9, 9, 9), -1.0, np.float32), 0.0)[1].shape == (0, 3)


def test_point_conventions_and_decision_level() -> None:
    p = np.array([[0.1, -0.2, 0.3]])
    np.testing.assert_allclose(to_model_points(p, "ifnet"), [[0.6, -0.4, 0.2]], atol=1e-7)
    np.testing.assert_allclose(to_model_points(p, "unit"), p, atol=1e-7)
    assert decision_level(0.5, "logits") == 0.0
    assert decision_level(0.9, "logits") == pytest.approx(np.log(9.0))
    assert decision_level(0.3, "probability") == 0.3


def test_values_exactly_at_the_level_still_give_a_closed_mesh() -> None:
    """Quantised values hit the level exactly at many grid points, where raw marching cubes
    makes zero-area triangles (about 40 % here); merging the coincident vertices removes them
    all and the mesh stays closed."""
    g = np.linspace(-1, 1, 33)
    r = np.sqrt(g[:, None, None] ** 2 + (1.4 * g[None, :, None]) ** 2 + g[None, None, :] ** 2)
    values = (np.round((0.7 - r) * 8) / 8).astype(np.float32)
    assert (values == 0).sum() > 100
    verts, faces = extract_surface(values, 0.0)
    mesh = trimesh.Trimesh(verts, faces, process=False)
    assert mesh.is_watertight
    assert (mesh.area_faces > 0).all()
    assert signed_volume(verts, faces) > 0


def test_explicit_resolution_snaps_to_the_coarse_grid() -> None:
    from app.core.crown.pipeline import compatible_resolution

    assert compatible_resolution(256, 33) == 257
    assert compatible_resolution(129, 33) == 129
    assert compatible_resolution(73, 19) == 73
    assert compatible_resolution(100, 19) == 145
    for res, coarse in [(256, 33), (200, 9), (97, 13)]:
        got = compatible_resolution(res, coarse)
        assert got >= res and (got - 1) % (coarse - 1) == 0
        k = (got - 1) // (coarse - 1)
        assert k & (k - 1) == 0


# An irregular hexahedron: no mirror plane, no axis swap maps it onto itself, so any error in
# the frame's axis order or signs moves its surface.
_HULL = trimesh.convex.convex_hull(
    np.array([[-4.5, -3, -6.5], [4.5, -3, -6.5], [-4.5, 3, -6.5], [3.0, 2.0, -5.0],
              [-4.5, -3, 6.5], [2.5, -3, 4.5], [-3.0, 1.5, 5.5], [4.5, 3, 2.0]])
)  # fmt: skip


def _posed_hull(seed: int) -> tuple[Mesh, np.ndarray, np.ndarray]:
    """The hull under a random rotation and translation, and that rigid map (R, t)."""
    rng = np.random.default_rng(seed)
    rot = trimesh.transformations.random_rotation_matrix(rng.random(3))[:3, :3]
    shift = rng.uniform(-60.0, 60.0, 3)
    return Mesh(_HULL.vertices @ rot.T + shift, np.asarray(_HULL.faces)), rot, shift


def _hull_distance(points_mm: np.ndarray, rot: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Signed distance to the posed hull (exact inside and beside faces, for a convex hull)."""
    local = (points_mm - shift) @ rot
    offsets = np.einsum("ij,ij->i", _HULL.face_normals, _HULL.triangles[:, 0])
    return (local @ _HULL.face_normals.T - offsets).max(axis=1)


def _oriented_model(tmp_path: Path):
    return _model(tmp_path, identity_crown_model("plain"))


@pytest.mark.parametrize("broken", [None, "transposed", "axis_order", "axis_sign"])
@pytest.mark.parametrize("seed", [10, 13, 17])
def test_oriented_frame_returns_the_scan_where_it_was(tmp_path, pool, monkeypatch, seed, broken):
    """Identity model, scan under a random rigid transform, case frame turned with it: the
    surface comes back within a third of a voxel. Each broken inverse must fail that check
    (the seeds turn the frame well away from a half turn, where a rotation equals its
    transpose and the transposed inverse would go unseen)."""
    scan, rot, shift = _posed_hull(seed)
    # turned off the hull's own axes, so no face lies along the voxel grid
    axes = rot @ ROT
    case = CaseFrame(tuple(shift + rot @ [0.5, -0.3, 0.2]), axes[:, 2], axes[:, 0])
    if broken is not None:
        real = pipeline.make_frame
        wrong = {
            "transposed": lambda r: r.T,
            "axis_order": lambda r: r[[1, 0, 2]],
            "axis_sign": lambda r: r * np.array([[1.0], [1.0], [-1.0]]),
        }[broken]

        class Broken(FrameTransform):
            def to_mm(self, points_unit):
                u = np.asarray(points_unit, dtype=np.float64) / self.scale
                return u @ wrong(self.rotation) + self.center

        def make_frame(*args, **kwargs):
            f = real(*args, **kwargs)
            return Broken(f.center, f.scale, f.rotation)

        monkeypatch.setattr(pipeline, "make_frame", make_frame)
    result = generate_crown(scan, _oriented_model(tmp_path), pool, case_frame=case)
    h = SIZE / (VOX - 1)
    d = _hull_distance(result.mesh.vertices, rot, shift) / h
    print(f"seed {seed} {broken}: mean |d| {np.abs(d).mean():.3f}, signed {d.mean():+.3f} voxel")
    if broken is None:
        assert np.abs(d).mean() < 1 / 3 and abs(d.mean()) < 1 / 8
        assert result.watertight
        np.testing.assert_allclose(result.report.info["frame_occlusal"], axes[:, 2], atol=1e-6)
    else:
        assert np.abs(d).mean() > 1.5 / 3


def test_cell_placement_feeds_cells_and_keeps_the_generation_grid(tmp_path, pool) -> None:
    """With ``placement: cells`` the voxels are cell-centred (spacing 1/R) while query points
    and marching cubes stay on the generation grid linspace(-0.5, 0.5, N), as IF-Net's
    generator does. A network sampling with align_corners=True reads cell i at the grid point
    linspace(-0.5, 0.5, R)[i], so the identity model returns the box grown by R/(R-1) about
    the frame centre: the stretch IF-Net's own networks were trained to undo."""
    model = _model(tmp_path, voxel_grid={"placement": "cells"})
    result = generate_crown(_box_scan(), model, pool)
    assert result.report.info["voxel_grid"]["placement"] == "cells"
    assert result.report.info["decoder_points"] == GEN**3
    grow = VOX / (VOX - 1)
    h = SIZE / (VOX - 1)
    v = result.mesh.vertices
    d_scaled = _signed_box_distance(CENTER + (v - CENTER) / grow) * grow
    assert abs(d_scaled.mean() / h) < 1 / 8
    assert np.abs(d_scaled).mean() / h < 1 / 3
    assert _signed_box_distance(v).mean() / h > 0.2
