"""server/oip.py without a server: any JSON (and any bytes) either parses into clips or is a BadRequest (400),
never another exception (which would be a 500); binary tensors round-trip."""

from __future__ import annotations

import json
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.errors import BadRequest
from server.inference import PCM
from server.oip import InferRequest, infer_response, parse_infer

SCALARS = st.none() | st.booleans() | st.integers(-3, 70_000) | st.floats(allow_nan=False) | st.text(max_size=8)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["name", "datatype", "shape", "data", "parameters", "sample_rate", "binary_data_size",
                     "binary_data", "binary_data_output", "inputs", "outputs", "id"]), inner, max_size=5),
    max_leaves=20)
INPUT = st.fixed_dictionaries({"name": st.sampled_from(["audio", "audio_file", "x"]),
                               "datatype": st.sampled_from(["FP32", "BYTES", "INT16"]),
                               "shape": st.lists(st.integers(-1, 3), max_size=3)},
                              optional={"data": JSON, "parameters": JSON})
DOC = st.fixed_dictionaries({"inputs": st.lists(INPUT, max_size=2)}, optional={
    "outputs": JSON, "parameters": JSON, "id": JSON})


def parse_or_400(body: bytes, header: str | None) -> InferRequest | None:
    try:
        return parse_infer(body, header)
    except BadRequest:
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=DOC | JSON, tail=st.binary(max_size=40))
def test_any_request_parses_or_is_a_bad_request(doc, tail):
    head = json.dumps(doc).encode()
    parse_or_400(head, None)
    parse_or_400(head + tail, str(len(head)))
    parse_or_400(tail, None)


def test_binary_inputs_and_outputs_round_trip():
    rows = np.arange(2 * 500, dtype=np.float32).reshape(2, 500) / 1000  # [2, 500] f32
    head = json.dumps({"id": 7, "inputs": [{"name": "audio", "datatype": "FP32", "shape": [2, 500],
                                            "parameters": {"binary_data_size": rows.nbytes, "sample_rate": 8000}}],
                       "outputs": [{"name": "scores", "parameters": {"binary_data": True}}, {"name": "label"}]})
    req = parse_infer(head.encode() + rows.tobytes(), str(len(head)))
    assert [type(c) for c in req.clips] == [PCM, PCM] and req.clips[1].sample_rate == 8000
    np.testing.assert_array_equal(np.stack([c.samples for c in req.clips]), rows)
    assert req.id == "7" and req.outputs == {"scores": True, "label": False}
    results = [{"label": lab, "scores": [{"label": "a", "score": p}, {"label": "b", "score": 1 - p}]}
               for lab, p in (("a", 0.75), ("b", 0.25))]
    body, n = infer_response("t", "v1", req, results, {"task_version": "v1"})
    doc = json.loads(body[:n])
    assert doc["outputs"][0] == {"name": "scores", "datatype": "FP32", "shape": [2, 2],
                                 "parameters": {"binary_data_size": 16}}
    assert doc["outputs"][1]["data"] == ["a", "b"] and doc["id"] == "7"
    np.testing.assert_array_equal(np.frombuffer(body[n:], "<f4").reshape(2, 2), [[0.75, 0.25], [0.25, 0.75]])
    files = [b"RIFF....", b"", b"x" * 300]
    raw = b"".join(struct.pack("<I", len(f)) + f for f in files)
    head = json.dumps({"inputs": [{"name": "audio_file", "datatype": "BYTES", "shape": [3],
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    assert parse_infer(head + raw, str(len(head))).clips == files
