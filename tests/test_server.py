"""The demo models through a real Triton server give the local results, and its failures say
which server and model failed.

The server is PyTriton's Triton (the ``server`` extra) serving the repository that
``crownscan serve-repo`` writes, each model through ONNX Runtime. Without the extra these tests
are skipped; in CI with ``-m server`` a missing extra is a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from app.core.crown.decode import CrownEvaluator, decision_level
from app.core.crown.decoder_plan import plan_decoder
from app.core.crown.frame import make_frame
from app.core.crown.meshio import load_mesh
from app.core.crown.pipeline import generate_crown
from app.core.crown.voxelize import voxelize
from app.core.errors import ModelError, PipelineError
from app.core.manifest import load_manifest
from app.core.remote import RemotePool, parse_server
from app.core.runtime import RuntimeConfig, SessionPool
from app.core.segment.imageio import load_image
from app.core.segment.pipeline import run_segment, segment_image
from app.core.triton_repo import RepoOptions, write_repository

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SAMPLE = ROOT / "resources" / "samples" / "case_001"
CPU = RuntimeConfig(preference=("cpu",), intra_op_threads=1)


def _require_pytriton(config: pytest.Config) -> None:
    try:
        import pytriton.triton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError as exc:
        reason = f"the server extra is not installed ({exc}): pip install -e '.[server]'"
        selected = config.getoption("markexpr") or ""
        if os.environ.get("CI") and "server" in selected and "not server" not in selected:
            pytest.fail(f"{reason}; CI runs -m server and must have it")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    _require_pytriton(request.config)
    from triton_server import onnx_model, serve_repository, slow

    base = tmp_path_factory.mktemp("triton")
    written, errors = write_repository(MODELS, base / "repo", RepoOptions(gpu=False))
    assert not errors
    assert {m.name for m in written} == {
        "scanseg_demo", "crown_demo", "crown_demo_encoder", "crown_demo_decoder"
    }  # fmt: skip
    extra = {"scanseg_slow": slow(onnx_model(MODELS / "scanseg_demo.onnx"), 3.0)}
    running = serve_repository(base / "repo", base, extra)
    yield running
    running.stop()


def _segmentation_served_as(tmp_path: Path, **server):
    """The demo segmentation manifest with a ``server`` block naming another server model."""
    data = json.loads((MODELS / "scanseg_demo.json").read_text(encoding="utf-8"))
    data["onnx"] = str(MODELS / data["onnx"])
    data["server"] = server
    path = tmp_path / "scanseg_demo.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return load_manifest(path)


def _remote(address: str, protocol: str = "grpc", **kw) -> RemotePool:
    return RemotePool(parse_server(f"{protocol}://{address}", **kw), CPU)


@pytest.fixture(scope="module")
def image():
    return load_image(SAMPLE / "image_1.jpg")


@pytest.fixture(scope="module")
def local_labels(image):
    model = load_manifest(MODELS / "scanseg_demo.json")
    return segment_image(image, model, SessionPool(CPU)).labels


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_segmentation_through_the_server_gives_the_local_mask(
    server, image, local_labels, protocol
):
    model = load_manifest(MODELS / "scanseg_demo.json")
    address = server.grpc if protocol == "grpc" else server.http
    pool = _remote(address, protocol)
    result = segment_image(image, model, pool)
    assert np.array_equal(result.labels, local_labels)
    assert len(np.unique(local_labels)) == 3
    assert result.report.providers == [f"Triton: {address} (CPU)"]
    traffic = pool.traffic()["scanseg_demo"]
    assert traffic.requests >= 1 and traffic.sent >= 3 * 4 * 64 * 64


def test_crown_through_the_server_has_the_local_mesh(server):
    model = load_manifest(MODELS / "crown_demo.json")
    scan = load_mesh(SAMPLE / "scan.ply")
    pool = _remote(server.grpc)
    local = generate_crown(scan, model, SessionPool(CPU), resolution=65)
    remote = generate_crown(scan, model, pool, resolution=65)
    assert np.array_equal(remote.mesh.faces, local.mesh.faces)
    assert np.array_equal(remote.mesh.vertices, local.mesh.vertices)
    assert remote.report.providers == [f"Triton: {server.grpc} (CPU)"]
    # the demo's features (5 MB) outweigh its voxels (0.4 MB): the whole graph runs remotely
    assert local.report.info["decoder_path"] == "split+gather"
    assert remote.report.info["decoder_path"].startswith("one graph (on Triton the voxels")
    traffic = pool.traffic()["crown_demo"]
    assert traffic.requests == remote.report.info["batches"] > 1
    voxel_bytes = 4 * model.voxel_resolution**3
    points = remote.report.info["decoder_points"]
    assert traffic.sent == traffic.requests * voxel_bytes + 12 * points


def test_split_crown_through_the_server_has_the_local_occupancy(server):
    model = load_manifest(MODELS / "crown_demo.json")
    scan = load_mesh(SAMPLE / "scan.ply")
    frame = make_frame(scan.vertices, model.frame, None, None)
    voxels = voxelize(
        frame.to_unit(scan.vertices), scan.faces, model.voxel_resolution, model.voxelization
    )
    grid = np.stack(np.meshgrid(*[np.linspace(-0.5, 0.5, 40)] * 3, indexing="ij"), -1)
    points = grid.reshape(-1, 3)
    level = decision_level(model.generation.threshold, model.output_kind)
    plan = plan_decoder(model.onnx, "x", "p", model.voxel_resolution)
    assert plan.split
    pool = _remote(server.grpc)
    pool.bind(model)
    here = CrownEvaluator(model, SessionPool(CPU), voxels, plan=plan)
    there = CrownEvaluator(model, pool, voxels, plan=plan)
    inside = here.evaluate(points) > level
    assert 0 < inside.sum() < inside.size
    assert np.array_equal(there.evaluate(points) > level, inside)
    traffic = pool.traffic()
    assert traffic["crown_demo_encoder"].requests == 1
    assert traffic["crown_demo_encoder"].sent == 4 * model.voxel_resolution**3
    assert traffic["crown_demo_decoder"].requests == there.batches


def test_a_server_model_of_another_signature_is_refused(server, tmp_path, image):
    model = _segmentation_served_as(tmp_path, name="crown_demo")
    with pytest.raises(ModelError) as err:
        segment_image(image, model, _remote(server.grpc))
    text = str(err.value)
    assert f"Triton {server.grpc}, model 'crown_demo'" in text
    assert "does not match scanseg_demo.onnx" in text and "has no tensor 'input'" in text


def test_a_version_the_server_lacks_is_a_version_mismatch(server, tmp_path, image):
    model = _segmentation_served_as(tmp_path, name="scanseg_demo", version=9)
    with pytest.raises(ModelError, match=r"model 'scanseg_demo' version 9: version mismatch, "
                       r"the server has version 4"):  # fmt: skip
        segment_image(image, model, _remote(server.grpc))


def test_a_model_not_on_the_server_is_named(server, tmp_path, image):
    model = _segmentation_served_as(tmp_path, name="not_here")
    with pytest.raises(ModelError, match=rf"Triton {server.grpc}, model 'not_here'.*not loaded"):
        segment_image(image, model, _remote(server.grpc))


def test_fallback_runs_locally_and_says_so(server, tmp_path, image, local_labels):
    model = _segmentation_served_as(tmp_path, name="not_here")
    pool = _remote(server.grpc, fallback=True)
    result = segment_image(image, model, pool)
    assert np.array_equal(result.labels, local_labels)
    assert result.report.providers == [f"cpu (local: Triton {server.grpc} failed)"]
    assert "model 'not_here'" in pool.get(model.onnx).notes[0]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_request_past_the_timeout_is_named(server, tmp_path, image, protocol):
    model = _segmentation_served_as(tmp_path, name="scanseg_slow")
    address = server.grpc if protocol == "grpc" else server.http
    pool = _remote(address, protocol, timeout_s=1.0)
    with pytest.raises(PipelineError, match=rf"Triton {address}, model 'scanseg_slow': no "
                       r"answer within 1 s"):  # fmt: skip
        segment_image(image, model, pool, roi=False)


def test_a_stopped_server_is_named_on_connect_and_on_run(server, image, tmp_path):
    model = load_manifest(MODELS / "scanseg_demo.json")
    connected = _remote(server.grpc)
    connected.bind(model)
    session = connected.get(model.onnx)
    server.stop()
    for protocol, address in (("grpc", server.grpc), ("http", server.http)):
        with pytest.raises(PipelineError, match=rf"Triton {address}, model 'scanseg_demo' "
                           r"version 4: server not reachable"):  # fmt: skip
            segment_image(image, model, _remote(address, protocol))
    with pytest.raises(PipelineError, match=rf"Triton {server.grpc}, model 'scanseg_demo' "
                       r"version 4: server not reachable"):  # fmt: skip
        session.run(None, {"input": np.zeros((1, 3, 64, 64), np.float32)})
    with pytest.raises(PipelineError, match=rf"image_1\.jpg: Triton {server.grpc}, model "):
        run_segment(
            SAMPLE / "image_1.jpg", model, _remote(server.grpc), mask_path=tmp_path / "m.png"
        )
    assert not (tmp_path / "m.png").exists()
