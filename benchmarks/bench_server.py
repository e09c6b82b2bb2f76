"""Per-case latency of the demo models locally and through a Triton server, with request sizes,
and segmentation latency with several clients at once.

The server is PyTriton's Triton (``pip install -e ".[server]"``) on this machine, serving the
repository ``crownscan serve-repo`` writes, each model through ONNX Runtime on the CPU (one
thread, like the local runs): the figures show the protocol's cost next to the local run, not
a GPU server's speed.

    python benchmarks/bench_server.py [--repeats 3] [--crown-resolution N] [--clients 1,2,4,8]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from app.core.crown.meshio import load_mesh  # noqa: E402
from app.core.crown.pipeline import generate_crown  # noqa: E402
from app.core.manifest import load_manifest  # noqa: E402
from app.core.remote import RemotePool, parse_server  # noqa: E402
from app.core.runtime import RuntimeConfig, SessionPool  # noqa: E402
from app.core.segment.imageio import load_image  # noqa: E402
from app.core.segment.pipeline import segment_image  # noqa: E402
from app.core.triton_repo import RepoOptions, write_repository  # noqa: E402
from benchmarks.bench_segment import median_ms  # noqa: E402

CPU = RuntimeConfig(preference=("cpu",), intra_op_threads=1)
SAMPLE = REPO / "resources" / "samples" / "case_001"


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f}"


def per_case(server, repeats: int, crown_res: int) -> None:
    seg = load_manifest(REPO / "models" / "scanseg_demo.json")
    crown = load_manifest(REPO / "models" / "crown_demo.json")
    image = load_image(SAMPLE / "image_1.jpg")
    scan = load_mesh(SAMPLE / "scan.ply")
    cases = {
        "segmentation": lambda pool: segment_image(image, seg, pool),
        f"crown (res {crown_res or crown.generation.resolution})": lambda pool: generate_crown(
            scan, crown, pool, resolution=crown_res or None
        ),
    }
    print(f"\nPer case (median of {repeats}; image {image.shape[1]}x{image.shape[0]}):")
    print(f"{'case':<18} {'where':<10} {'ms':>9} {'x local':>8} {'requests':>9} "
          f"{'sent MB':>8} {'recv MB':>8} {'largest MB':>10}")  # fmt: skip
    for name, run in cases.items():
        local_pool = SessionPool(CPU)
        run(local_pool)  # warm: sessions, split plan
        local = median_ms(lambda r=run, p=local_pool: r(p), repeats)
        del local_pool  # its sessions' memory, before the server's grows
        gc.collect()
        print(f"{name:<18} {'local':<10} {local:9.0f} {1.0:8.2f}")
        for protocol, address in (("grpc", server.grpc), ("http", server.http)):
            pool = RemotePool(parse_server(f"{protocol}://{address}", timeout_s=900), CPU)
            run(pool)
            before = {k: (t.requests, t.sent, t.received) for k, t in pool.traffic().items()}
            ms = median_ms(lambda r=run, p=pool: r(p), repeats)
            req = sent = recv = largest = 0
            for key, t in pool.traffic().items():
                r0, s0, v0 = before.get(key, (0, 0, 0))
                req, sent, recv = req + t.requests - r0, sent + t.sent - s0, recv + t.received - v0
                largest = max(largest, t.largest_request)
            sizes = f"{_mb(sent / repeats):>8} {_mb(recv / repeats):>8} {_mb(largest):>10}"
            print(f"{name:<18} {protocol:<10} {ms:9.0f} {ms / local:8.2f} {req / repeats:9.1f} "
                  f"{sizes}")  # fmt: skip
        print(f"  server models: {', '.join(pool.traffic())}")
        del pool
        gc.collect()


def concurrent(server, clients: list[int], cases_per_client: int) -> None:
    seg = load_manifest(REPO / "models" / "scanseg_demo.json")
    image = load_image(SAMPLE / "image_1.jpg")
    print(f"\nSegmentation, N clients at once over gRPC ({cases_per_client} cases each):")
    print(f"{'clients':>7} {'median case ms':>15} {'worst case ms':>14} {'cases/s':>8}")
    for n in clients:
        pools = [RemotePool(parse_server(f"grpc://{server.grpc}", timeout_s=900), CPU)
                 for _ in range(n)]  # fmt: skip
        for pool in pools:
            segment_image(image, seg, pool)
        times: list[float] = []
        lock = threading.Lock()

        def client(pool: RemotePool, times: list[float] = times, lock=lock) -> None:
            for _ in range(cases_per_client):
                t0 = time.perf_counter()
                segment_image(image, seg, pool)
                with lock:
                    times.append((time.perf_counter() - t0) * 1000.0)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(p,)) for p in pools]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        print(f"{n:>7} {statistics.median(times):15.0f} {max(times):14.0f} "
              f"{len(times) / wall:8.2f}")  # fmt: skip
        del pools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crown-resolution", type=int, default=0, help="0: the manifest's")
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--cases-per-client", type=int, default=3)
    args = parser.parse_args()
    from triton_server import serve_repository

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        write_repository(REPO / "models", base / "repo", RepoOptions(gpu=False))
        server = serve_repository(base / "repo", base)
        try:
            print(f"Triton (PyTriton) started in {server.start_s:.1f} s; models on the CPU, "
                  "ONNX Runtime 1 thread on both sides")  # fmt: skip
            per_case(server, args.repeats, args.crown_resolution)
            concurrent(server, [int(c) for c in args.clients.split(",")], args.cases_per_client)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
