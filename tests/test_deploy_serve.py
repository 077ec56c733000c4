"""`medfit serve`: every status code through TestClient, then schemathesis on a live server.

The live server is a real uvicorn on 127.0.0.1 (a free port), stopped at the end of the module.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason='serving needs: pip install "medfit[serve]"')
uvicorn = pytest.importorskip("uvicorn", reason='serving needs: pip install "medfit[serve]"')

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from medfit.deploy.serve import Limits, create_app, uvicorn_options  # noqa: E402
from medfit.inference import Predictor  # noqa: E402
from tests.deploy_helpers import copy_run, run_cli, val_images  # noqa: E402
from tests.test_decode import write_dicom  # noqa: E402

LIMIT = 256 * 1024  # a small upload limit keeps the 413 tests cheap


@pytest.fixture(scope="module")
def app(predictor: Predictor) -> FastAPI:
    return create_app(predictor, Limits(max_upload_bytes=LIMIT, max_concurrent=1, max_waiting=1))


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_and_model(client: TestClient, run: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["classes"] == ["left", "right"] and info["model_name"] == "tf_efficientnet_lite0"
    assert info["preprocess"]["img_size"] == 32 and info["tta_views"] == ["identity"]
    assert info["temperature"] is None and info["summary"]["val_images"] == 8
    assert info["limits"]["max_upload_bytes"] == LIMIT and info["limits"]["max_concurrent"] == 1
    assert Limits().max_upload_bytes == 20 * 1024 * 1024


def test_predict_png_matches_batch_prediction(
    client: TestClient, predictor: Predictor, run: Path
) -> None:
    path = val_images(run)[0]
    response = client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = predictor.predict_files([path]).probs[0]
    got = [body["probabilities"][c] for c in ("left", "right")]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert body["label"] == ["left", "right"][int(np.argmax(expected))]


def test_predict_dicom_by_type_by_suffix_and_by_content(
    client: TestClient, predictor: Predictor, tmp_path: Path
) -> None:
    pixels = (np.arange(40 * 40).reshape(40, 40) * 37 % 4096).astype(np.uint16)
    path = write_dicom(tmp_path / "x.dcm", pixels, WindowCenter=2048, WindowWidth=4096)
    expected = predictor.predict_files([path]).probs[0]
    data = path.read_bytes()
    for name, kind in (
        ("x", "application/dicom"),
        ("x.dcm", ""),
        ("blob", "application/octet-stream"),
    ):
        response = client.post("/predict", files={"file": (name, data, kind)})
        assert response.status_code == 200, (name, kind, response.text)
        got = list(response.json()["probabilities"].values())
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_bad_image_is_400_with_a_short_message(client: TestClient) -> None:
    for data, kind in (
        (b"\x89PNG\r\n\x1a\n broken", "image/png"),
        (b"x" * 200, "application/dicom"),
    ):
        response = client.post("/predict", files={"file": ("a", data, kind)})
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail.startswith("not a readable image: ")
        assert "medfit-serve-" not in detail and "Traceback" not in detail and "\n" not in detail


def test_too_large_is_413_by_header_and_by_bytes_received(client: TestClient) -> None:
    big = _png_bytes(np.random.default_rng(0).integers(0, 256, (600, 600), dtype=np.uint8))
    assert len(big) > LIMIT
    response = client.post("/predict", files={"file": ("big.png", big, "image/png")})
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body larger than {LIMIT} bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n"
        yield from (big[i : i + 65536] for i in range(0, len(big), 65536))
        yield b"\r\n--b--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=b"}
    response = client.post("/predict", content=chunks(), headers=headers)
    assert response.status_code == 413


def test_wrong_content_types_are_415(client: TestClient) -> None:
    response = client.post("/predict", json={"file": "aGVsbG8="})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]
    response = client.post("/predict", files={"file": ("a.txt", b"hello", "text/plain")})
    assert response.status_code == 415
    assert "'text/plain'" in response.json()["detail"]


def test_missing_file_or_bad_query_is_422(client: TestClient) -> None:
    response = client.post(
        "/predict", data={"image": "x"}, files={"other": ("a", b"x", "image/png")}
    )
    assert response.status_code == 422
    assert response.json() == {"detail": "multipart field 'file' (the image) is missing"}
    png = _png_bytes(np.zeros((8, 8), np.uint8))
    response = client.post("/predict?tta=maybe", files={"file": ("a.png", png, "image/png")})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("tta: ")


def test_busy_server_answers_503_then_recovers(client: TestClient, app: FastAPI) -> None:
    png = _png_bytes(np.zeros((8, 8), np.uint8))
    gate = app.state.gate
    for _ in range(gate.capacity):  # as if 1 request ran and 1 waited
        assert gate.admit()
    try:
        response = client.post("/predict", files={"file": ("a.png", png, "image/png")})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
    finally:
        for _ in range(gate.capacity):
            gate.leave()
    assert client.post("/predict", files={"file": ("a.png", png, "image/png")}).status_code == 200


def test_internal_errors_are_500_without_details(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret /srv/models/path in a traceback")

    monkeypatch.setattr(predictor, "probabilities", explode)
    png = _png_bytes(np.zeros((8, 8), np.uint8))
    with TestClient(create_app(predictor), raise_server_exceptions=False) as client:
        response = client.post("/predict", files={"file": ("a.png", png, "image/png")})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}


def test_temperature_scaling_is_400_when_uncalibrated_and_applied_when_calibrated(
    client: TestClient, run: Path, tmp_path: Path
) -> None:
    png = _png_bytes(np.zeros((8, 8), np.uint8))
    files = {"file": ("a.png", png, "image/png")}
    response = client.post("/predict?temperature_scaled=true", files=files)
    assert response.status_code == 400
    assert "not available" in response.json()["detail"]

    calibrated = copy_run(run, tmp_path / "cal")
    (calibrated / "calibration.json").write_text('{"temperature": 0.5}')
    with TestClient(create_app(Predictor(calibrated, device="cpu"))) as cal:
        plain = np.array(list(cal.post("/predict", files=files).json()["probabilities"].values()))
        query = "/predict?temperature_scaled=true"
        scaled = np.array(list(cal.post(query, files=files).json()["probabilities"].values()))
    np.testing.assert_allclose(scaled, plain**2 / (plain**2).sum(), rtol=1e-4)


def test_openapi_schema_documents_the_contract(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/predict", "/health", "/model"}
    post = schema["paths"]["/predict"]["post"]
    body = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"] and body["properties"]["file"]["format"] == "binary"
    assert {"200", "400", "413", "415", "422", "500", "503"} <= set(post["responses"])


def test_serve_command_binds_localhost_with_the_given_limits(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[FastAPI, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    argv = ["serve", str(run), "--port", "8123", "--max-upload-mb", "1", "--max-concurrent", "3"]
    threads = torch.get_num_threads()
    try:
        assert run_cli([*argv, "--device", "cpu"]) == 0
        # Each of the 3 concurrent inferences gets its share of the cores, not all of them.
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 3)
    finally:
        torch.set_num_threads(threads)
    (app, options), *_ = calls
    assert options["host"] == "127.0.0.1" and options["port"] == 8123
    with TestClient(app) as client:
        limits = client.get("/model").json()["limits"]
    assert limits["max_upload_bytes"] == 1024 * 1024 and limits["max_concurrent"] == 3
    assert run_cli(["serve", str(run), "--max-concurrent", "0"]) == 2


# --- schemathesis against a live server ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _live_server(predictor: Predictor, limits: Limits) -> Iterator[str]:
    """uvicorn on 127.0.0.1 in a thread, configured as `medfit serve` does; stopped and joined."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(predictor, limits),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        **uvicorn_options(limits),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_url(predictor: Predictor) -> Iterator[str]:
    """The module's live server (default limits but the upload size), shared by its tests."""
    with _live_server(predictor, Limits(max_upload_bytes=LIMIT)) as url:
        yield url


def _slow_sockets(url: str, n: int) -> list[socket.socket]:
    """n connections that send half a request header, as a slowloris client does."""
    port = int(url.rsplit(":", 1)[1])
    sockets = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        sockets.append(s)
    return sockets


def _closed_by_server(s: socket.socket) -> bool:
    """True when the server closed `s` without answering (an orderly close or a reset)."""
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_slow_header_sockets_do_not_lock_out_health_or_predict(live_url: str, run: Path) -> None:
    import httpx

    image = val_images(run)[0]
    files = {"file": (image.name, image.read_bytes(), "image/png")}
    assert httpx.post(f"{live_url}/predict", files=files).status_code == 200  # warm the model
    slow = _slow_sockets(live_url, 70)  # more than max_connections (64)
    try:
        time.sleep(0.2)
        for s in slow:
            s.sendall(b"a")  # still alive, still not done
        start = time.monotonic()
        health = httpx.get(f"{live_url}/health", timeout=5)
        assert health.status_code == 200 and time.monotonic() - start < 1
        start = time.monotonic()
        predicted = httpx.post(f"{live_url}/predict", files=files, timeout=5)
        assert predicted.status_code == 200 and time.monotonic() - start < 1, predicted.text
    finally:
        for s in slow:
            s.close()


def test_connection_without_headers_is_closed_after_the_read_timeout(
    predictor: Predictor,
) -> None:
    import httpx

    limits = Limits(read_timeout_s=0.3, idle_timeout_s=1, max_connections=2)
    with _live_server(predictor, limits) as url:
        (stalled,) = _slow_sockets(url, 1)
        start = time.monotonic()
        assert _closed_by_server(stalled)
        assert 0.2 < time.monotonic() - start < 3
        stalled.close()
        # Past 4 x max_connections half-open sockets the oldest is dropped, not the newcomer.
        crowd = _slow_sockets(url, 9)
        try:
            assert _closed_by_server(crowd[0])
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        finally:
            for s in crowd:
                s.close()


def test_stalled_upload_is_408(predictor: Predictor) -> None:
    with _live_server(predictor, Limits(read_timeout_s=0.3)) as url:
        s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10)
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        s.sendall(head + b"boundary=b\r\nContent-Length: 1000\r\n\r\n--b\r\n")
        reply = b""
        # Headers and body may come in separate packets; stop at the body (on a loaded machine
        # the close can come later than the reply).
        while b"stalled" not in reply and (chunk := s.recv(4096)):
            reply += chunk
        s.close()
    assert reply.startswith(b"HTTP/1.1 408") and b"stalled" in reply


def test_schemathesis_finds_no_contract_violation(live_url: str) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/predict", "/health", "/model"}
    seen: dict[str, set[int]] = {}
    for operation in operations:

        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            # Every other default check runs (no 5xx, documented statuses and content types,
            # response schemas, invalid input rejected...). "Schema-valid data is accepted" is
            # off: a binary field cannot say "must decode as an image", so random bytes
            # correctly get the documented 400.
            response = case.call_and_validate(
                base_url=live_url, excluded_checks=[positive_data_acceptance]
            )
            seen.setdefault(case.operation.path, set()).add(response.status_code)

        check()
    # It reached the model (real images generated for image/* parts) and the decoder's 400.
    assert seen["/predict"] >= {200, 400}, seen
