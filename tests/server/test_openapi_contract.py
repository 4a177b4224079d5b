"""The OpenAPI contract: every error response is a problem+json Problem, PUT documents its 200, the task-name
pattern and limits are in the schema; schemathesis then sends >= 1,000 generated requests (valid and invalid)
across every route to a REAL server process, with the admin token, and every answer must be a non-5xx that
conforms to the schema."""

from __future__ import annotations

import time

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings

from server.app import create_app
from server.settings import Settings

from .helpers import make_package
from .live import ADMIN, LiveServer

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import CHECKS  # noqa: E402

MIN_CASES = 1000


def openapi(tmp_path) -> dict:
    return create_app(Settings(store=str(tmp_path / "s"), bundle_dir=tmp_path / "b", max_upload_bytes=4096)).openapi()


def test_every_error_response_is_problem_json_with_the_problem_schema(tmp_path):
    doc = openapi(tmp_path)
    errors = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                if status[0] in "45":
                    errors += 1
                    if path.startswith("/v2"):  # the Open Inference Protocol's own error body
                        assert resp["content"] == {"application/json": {
                            "schema": {"$ref": "#/components/schemas/V2Error"}}}, (method, path, status)
                        continue
                    assert resp["content"] == {"application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}}}, (method, path, status)
    assert errors > 20
    assert set(doc["components"]["schemas"]["Problem"]["required"]) == {"type", "title", "status", "detail"}


def test_put_documents_its_200_and_the_task_name_pattern_and_limits(tmp_path):
    doc = openapi(tmp_path)
    put = doc["paths"]["/v1/tasks/{task}"]["put"]
    assert {"200", "201"} <= set(put["responses"])
    assert put["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/TaskCreated")
    for path in ("/v1/tasks/{task}", "/v1/tasks/{task}/classify"):
        for op in doc["paths"][path].values():
            (task,) = [p for p in op["parameters"] if p["name"] == "task"]
            assert task["schema"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,63}$" and task["schema"]["maxLength"] == 64
    body = put["requestBody"]["content"]["application/octet-stream"]["schema"]
    assert body["maxLength"] == 4096  # the server's SPEECHPROMPT_MAX_UPLOAD_BYTES
    top_k = [p for p in doc["paths"]["/v1/classify"]["post"]["parameters"] if p["name"] == "top_k"][0]
    assert (top_k["schema"]["minimum"], top_k["schema"]["maximum"]) == (1, 1000)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("contract"), SPEECHPROMPT_MAX_UPLOAD_BYTES="65536") as srv:
        pkg = make_package("commands-en", 1, **srv.dims())
        assert srv.http.put("/v1/tasks/commands-en", content=pkg.data, headers=ADMIN).status_code == 201
        yield srv


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation_in_1000_cases(live):
    # invalid input must be refused with a 4xx; 413 is the answer to a body over its documented maxLength
    config = schemathesis.config.SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]}}})
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 20  # every documented route: /v1/admin/status, /v1/tasks/{task}/verbalizer, nine /v2
    checks = [c for c in CHECKS.get_all() if c.__name__ in (
        "not_a_server_error", "status_code_conformance", "content_type_conformance",
        "response_schema_conformance", "response_headers_conformance", "negative_data_rejection")]
    assert len(checks) == 6
    session = requests.Session()
    count = {"cases": 0}
    start = time.monotonic()
    for op in operations:
        rich = bool(op.path_parameters or op.query or op.body)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not rich:
                continue

            @settings(max_examples=130 if rich else 10, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case) -> None:
                count["cases"] += 1
                case.call_and_validate(session=session, headers=dict(ADMIN), checks=checks)

            run()
    assert count["cases"] >= MIN_CASES, count
    assert time.monotonic() - start < 150
    assert live.http.get("/readyz").status_code == 200, live.tail()
