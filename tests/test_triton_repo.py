"""The parts of the Triton support that need no server: the repository ``serve-repo`` writes,
server URLs, the manifest's ``server`` block and the metadata check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from app.cli import main
from app.core.errors import ModelError
from app.core.manifest import load_manifest
from app.core.remote import check_signature, parse_server, server_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def _read_config(repo: Path, name: str) -> str:
    return (repo / name / "config.pbtxt").read_text(encoding="utf-8")


def test_serve_repo_writes_every_model_and_the_crown_split(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    assert main(["serve-repo", str(MODELS), str(repo), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = {m["name"]: m["version"] for m in out["models"]}
    assert names == {"scanseg_demo": "4", "crown_demo": "2", "crown_demo_encoder": "2",
                     "crown_demo_decoder": "2"}  # fmt: skip
    for name, version in names.items():
        model = onnx.load(str(repo / name / version / "model.onnx"))
        config = _read_config(repo, name)
        assert f'name: "{name}"' in config and 'backend: "onnxruntime"' in config
        assert "KIND_GPU" in config and 'name : "tensorrt"' in config
        assert "max_batch_size: 0" in config  # the demo models fix their first dimension
        for item in model.graph.input:
            assert f'name: "{item.name}"' in config
    encoder = onnx.load(str(repo / "crown_demo_encoder" / "2" / "model.onnx"))
    decoder = onnx.load(str(repo / "crown_demo_decoder" / "2" / "model.onnx"))
    features = [o.name for o in encoder.graph.output]
    assert features and features == [i.name for i in decoder.graph.input][: len(features)]


def test_serve_repo_never_writes_into_a_folder_in_use(tmp_path: Path, capsys) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("x")
    assert main(["serve-repo", str(MODELS), str(used)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an empty folder" in err
    assert [p.name for p in used.iterdir()] == ["keep.txt"]


def test_a_model_with_a_free_first_dimension_gets_dynamic_batching(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "seg.onnx"))
    data = json.loads((MODELS / "scanseg_demo.json").read_text(encoding="utf-8"))
    data |= {"onnx": "seg.onnx", "server": {"name": "relu", "version": 3}}
    (tmp_path / "seg.json").write_text(json.dumps(data), encoding="utf-8")
    assert main(["serve-repo", str(tmp_path), str(tmp_path / "repo"), "--cpu"]) == 0
    config = _read_config(tmp_path / "repo", "relu")
    assert "max_batch_size: 8" in config and "dynamic_batching" in config
    assert "dims: [ 4 ]" in config and "KIND_CPU" in config and "tensorrt" not in config
    assert (tmp_path / "repo" / "relu" / "3" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("gpu-server", "grpc://gpu-server:8001"),
        ("grpc://10.0.0.5:9001", "grpc://10.0.0.5:9001"),
        ("http://gpu-server", "http://gpu-server:8000"),
        ("grpcs://gpu-server", "grpcs://gpu-server:8001"),
    ],
)
def test_server_urls(text: str, url: str) -> None:
    assert parse_server(text).url == url


@pytest.mark.parametrize("text", ["ftp://x:1", "grpc://", "grpc://x:port", "grpc://x:1/models"])
def test_bad_server_urls_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="server"):
        parse_server(text)


def test_bad_server_flag_is_exit_2(tmp_path: Path, capsys) -> None:
    image = tmp_path / "i.png"
    code = main(["segment", str(image), "-o", str(tmp_path / "m.png"), "--server", "ftp://x"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --server: server 'ftp://x': scheme")


def test_server_name_and_version_come_from_the_manifest(tmp_path: Path) -> None:
    assert server_model(load_manifest(MODELS / "crown_demo.json")) == ("crown_demo", "2")
    data = json.loads((MODELS / "crown_demo.json").read_text(encoding="utf-8"))
    shutil.copy(MODELS / "crown_demo.onnx", tmp_path)
    for block, want in (({"name": "lab_crown", "version": 7}, ("lab_crown", "7")),
                        ({}, ("c", ""))):  # fmt: skip
        (tmp_path / "c.json").write_text(json.dumps({**data, "server": block}), "utf-8")
        assert server_model(load_manifest(tmp_path / "c.json")) == want
    for block, key in (({"version": 0}, "server.version"), ({"nme": "x"}, "server.nme")):
        (tmp_path / "c.json").write_text(json.dumps({**data, "server": block}), "utf-8")
        with pytest.raises(ModelError, match=rf"key '{key}'"):
            load_manifest(tmp_path / "c.json")


def _meta(**changes) -> dict:
    meta = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": ["1", "3", "-1", "-1"]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, -1, -1, -1]}],
    }
    for key, value in changes.items():
        meta["inputs"][0][key] = value
    return meta


def test_metadata_check_names_the_first_difference() -> None:
    path = MODELS / "scanseg_demo.onnx"
    check_signature(path, _meta(), "here")
    check_signature(path, _meta(shape=[-1, 3, 512, 512]), "here")  # narrower on the server
    cases = [
        (_meta(datatype="FP16"), "'input' is FP16 on the server, FP32 in the file"),
        (_meta(shape=[1, 4, -1, -1]), "'input' has shape [1, 4, -1, -1] on the server"),
        (_meta(shape=[1, 3, -1]), "'input' has shape [1, 3, -1] on the server"),
        (_meta(name="image"), "has no tensor 'input'"),
    ]
    for meta, text in cases:
        with pytest.raises(ModelError, match=r"here: does not match scanseg_demo\.onnx") as err:
            check_signature(path, meta, "here")
        assert text in str(err.value)
