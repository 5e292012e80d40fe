"""The HTTP API's OpenAPI schema, read from a real ``mnist-cnn serve`` process (the shipped tutorial model)."""

from __future__ import annotations

import httpx
import pytest

from test_serve import running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("api-fuzz") / "server.log"
    with running_server("tutorial", log) as (base, proc):
        yield base, log


def test_the_schema_declares_every_answer(server):
    """The statuses the server sends, each with a JSON body; the fields every prediction has."""
    schema = httpx.get(server[0] + "/openapi.json", timeout=60).json()
    predict = schema["paths"]["/api/predict"]["post"]
    assert {"200", "400", "408", "413", "415", "422", "431"} <= set(predict["responses"])
    for path in schema["paths"].values():
        for operation in path.values():
            assert "431" in operation["responses"]  # a head too large is refused before any route
            for status, answer in operation["responses"].items():
                assert list(answer["content"]) == ["application/json"], status
    fields = schema["components"]["schemas"]["PredictResponse"]["properties"]
    assert {"verdict", "status", "reasons", "energy", "inputs_png", "timing_ms"} <= set(fields)
    bodies = predict["requestBody"]["content"]
    assert bodies["multipart/form-data"]["schema"]["properties"]["file"]["minLength"] == 1  # empty: 400
    assert {"image/*", "application/octet-stream"} <= set(bodies)  # raw bodies of any other type are read too
