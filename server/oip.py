"""Open Inference Protocol (KServe "v2" REST) tensors: parse an infer request, build an infer response.

No FastAPI here. A request is JSON, or JSON followed by raw tensor bytes (the binary tensor data extension:
the ``Inference-Header-Content-Length`` header gives the JSON's length, each input with
``parameters.binary_data_size`` takes that many bytes of the rest, in input order). Inputs this server takes
(one of them per request):

- ``audio``: FP32 ``[batch, samples]`` mono PCM at 16 kHz, or at ``parameters.sample_rate`` Hz (on the input
  or on the request); every row of a batch has the same length (a tensor), so send clips of different
  lengths as separate requests or as ``audio_file``.
- ``audio_file``: BYTES ``[batch]``, each element an encoded file (WAV, FLAC, Ogg, MP3, M4A/MP4/3GP, WebM, ADTS AAC). In the binary
  extension each element is a 4-byte little-endian length and its bytes; in JSON each element is the
  file's base64 text (JSON strings cannot carry raw bytes).

Outputs: ``label`` BYTES ``[batch]`` (best class) and ``scores`` FP32 ``[batch, n_classes]`` (softmax over the
task's classes, in the label order of ``GET /v2/models/{task}``). The request's ``parameters.speech_trim``
(``package``, the default; ``recording``; ``on``; ``off``) is ``/v1``'s ``speech_trim`` query parameter. Malformed requests raise
``BadRequest`` (400); the errors of the audio itself are the same typed errors as ``/v1``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechprompt.audio import MAX_PCM_RATE, MODEL_RATE

from .errors import BadRequest
from .inference import PCM
from .speech_trims import MODES

HEADER_LENGTH = "inference-header-content-length"
INPUTS = {"audio": "FP32", "audio_file": "BYTES"}
OUTPUTS = {"label": "BYTES", "scores": "FP32"}
MAX_BATCH = 64  # clips per infer request
ACCEPTED_INPUTS = ("one input: 'audio' FP32 [batch, samples] (16 kHz mono, or parameters.sample_rate) or "
                   f"'audio_file' BYTES [batch] (encoded files); batch 1 to {MAX_BATCH}")


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request: ``clips`` (encoded files as bytes, or PCM), the request ``id`` to echo, the
    outputs to return with whether each goes as binary data, and the request's ``speech_trim`` mode."""

    clips: list[bytes | PCM]
    id: str | None
    outputs: dict[str, bool]
    speech_trim: str = "package"


def _json(raw: bytes) -> dict:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"the inference header is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the inference request must be a JSON object")
    return doc


def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON inference header and the binary tensor bytes after it (empty for a pure JSON request)."""
    if header_length is None:
        return _json(body), b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise BadRequest(f"Inference-Header-Content-Length {header_length!r} does not fit a {len(body)}-byte body")
    n = int(header_length)
    return _json(body[:n]), body[n:]


def _params(obj: dict) -> dict:
    """The ``parameters`` object of a request, input or output ({} when absent); BadRequest if not an object."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be a JSON object")
    return params


def _shape(spec: dict, name: str) -> list[int]:
    shape = spec.get("shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool)
                                                           and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r} needs a 'shape' of non-negative integers", accepted=ACCEPTED_INPUTS)
    return shape


def _binary_size(spec: dict) -> int | None:
    size = _params(spec).get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest("'parameters.binary_data_size' must be a non-negative integer")
    return size


def _sample_rate(doc: dict, spec: dict) -> int:
    rate = _params(spec).get("sample_rate", _params(doc).get("sample_rate", MODEL_RATE))
    if not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= MAX_PCM_RATE:
        raise BadRequest(f"sample_rate {rate!r} is not accepted",
                         accepted=f"an integer number of Hz from 1000 to {MAX_PCM_RATE}")
    return rate


def _fp32_rows(spec: dict, shape: list[int], raw: bytes | None, rate: int) -> list[PCM]:
    if len(shape) != 2:
        raise BadRequest(f"input 'audio' has shape {shape}; it must be [batch, samples]", accepted=ACCEPTED_INPUTS)
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != 4 * count:
            raise BadRequest(f"input 'audio' has {len(raw)} bytes of data; shape {shape} FP32 needs {4 * count}")
        flat = np.frombuffer(raw, dtype="<f4")
    else:
        try:
            flat = np.asarray(spec.get("data"), dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise BadRequest("input 'audio' data must be numbers (a flat or nested list)") from None
        if flat.size != count:
            raise BadRequest(f"input 'audio' has {flat.size} values; shape {shape} needs {count}")
    rows = flat.reshape(shape).astype(np.float32, copy=True)  # [batch, samples]
    return [PCM(row, rate) for row in rows]


def _bytes_elements(raw: bytes, count: int) -> list[bytes]:
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise BadRequest("input 'audio_file' binary data ends inside an element's 4-byte length")
        (n,) = struct.unpack_from("<I", raw, at)
        if at + 4 + n > len(raw):
            raise BadRequest("input 'audio_file' binary data is shorter than an element's declared length")
        out.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    if len(out) != count:
        raise BadRequest(f"input 'audio_file' holds {len(out)} elements; its shape says {count}")
    return out


def _file_rows(spec: dict, shape: list[int], raw: bytes | None) -> list[bytes]:
    if len(shape) != 1:
        raise BadRequest(f"input 'audio_file' has shape {shape}; it must be [batch]", accepted=ACCEPTED_INPUTS)
    if raw is not None:
        return _bytes_elements(raw, shape[0])
    data = spec.get("data")
    if not isinstance(data, list) or len(data) != shape[0] or not all(isinstance(x, str) for x in data):
        raise BadRequest(f"input 'audio_file' in JSON must be a list of {shape[0]} base64 strings")
    try:
        return [base64.b64decode(x, validate=True) for x in data]
    except (binascii.Error, ValueError):
        raise BadRequest("input 'audio_file' in JSON must hold base64 text (raw bytes: binary data)") from None


def _outputs(doc: dict) -> dict[str, bool]:
    default_binary = bool(_params(doc).get("binary_data_output", False))
    asked = doc.get("outputs")
    if asked is None:
        return dict.fromkeys(OUTPUTS, default_binary)
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    out: dict[str, bool] = {}
    for o in asked:
        name = o.get("name")
        if not isinstance(name, str) or name not in OUTPUTS:
            raise BadRequest(f"unknown output {name!r}", accepted=sorted(OUTPUTS))
        out[name] = bool(_params(o).get("binary_data", default_binary))
    return out


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """An infer request body (JSON, or JSON + binary tensors) -> :class:`InferRequest`; BadRequest (400)
    for anything malformed (unknown input, wrong datatype or shape, data that does not match its shape)."""
    doc, binary = split_body(body, header_length)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest("the request needs exactly one input", accepted=ACCEPTED_INPUTS)
    spec = inputs[0]
    name = spec.get("name")
    if not isinstance(name, str) or name not in INPUTS:
        raise BadRequest(f"unknown input {name!r}", accepted=ACCEPTED_INPUTS)
    if spec.get("datatype") != INPUTS[name]:
        raise BadRequest(f"input {name!r} must have datatype {INPUTS[name]}, not {spec.get('datatype')!r}",
                         accepted=ACCEPTED_INPUTS)
    shape = _shape(spec, name)
    if not 1 <= shape[0] <= MAX_BATCH:
        raise BadRequest(f"a batch of {shape[0]} clips is not accepted", accepted=ACCEPTED_INPUTS)
    if "speech_trim" in _params(spec):
        raise BadRequest("'speech_trim' is a parameter of the request, not of an input: put it in the request's "
                         "'parameters' ('package', 'recording', 'on' or 'off')")
    size = _binary_size(spec)
    if size is not None and size != len(binary):
        raise BadRequest(f"input {name!r} declares {size} bytes of binary data; the body has {len(binary)}")
    if size is None and binary:
        raise BadRequest(f"the body has {len(binary)} bytes after the inference header that no input declares")
    raw = binary if size is not None else None
    if name == "audio":
        clips: list[bytes | PCM] = list(_fp32_rows(spec, shape, raw, _sample_rate(doc, spec)))
    else:
        clips = list(_file_rows(spec, shape, raw))
    req_id = doc.get("id")
    return InferRequest(clips, None if req_id is None else str(req_id), _outputs(doc), _speech_trim(doc))


def _speech_trim(doc: dict) -> str:
    mode = _params(doc).get("speech_trim", "package")
    if not isinstance(mode, str) or mode not in MODES:
        raise BadRequest(f"'parameters.speech_trim' {str(mode)[:40]!r} is not accepted: 'package' (the default), "
                         "'recording', 'on' or 'off'")
    return mode


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def infer_response(task: str, version: str, request: InferRequest, results: list[dict],
                   extra: dict[str, Any]) -> tuple[bytes, int | None]:
    """The response body for ``results`` (one ``classify_one(by_label=True)`` body per clip) and the JSON
    header's length when binary outputs follow it (None: pure JSON). ``extra`` goes into the response
    ``parameters`` (task version, backbone, timings)."""
    labels = [r["label"] for r in results]
    scores = np.array([[s["score"] for s in r["scores"]] for r in results], dtype="<f4")  # [batch, classes]
    tensors = {"label": ("BYTES", [len(results)], labels, _bytes_tensor(labels)),
               "scores": ("FP32", list(scores.shape), scores.tolist(), scores.tobytes())}
    outputs, blobs = [], []
    for name, binary in request.outputs.items():
        datatype, shape, data, raw = tensors[name]
        out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            out["data"] = data
        outputs.append(out)
    doc: dict[str, Any] = {"model_name": task, "model_version": version, "parameters": extra, "outputs": outputs}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def model_metadata(task: str, info: dict) -> dict:
    """``GET /v2/models/{task}``: name, versions, platform, inputs and outputs (``info``: the registry's
    description of the task, with its labels); the labels and backbone are in ``parameters``."""
    classes = len(info.get("labels") or [])
    return {"name": task, "versions": [info["version"]] if info.get("version") else [],
            "platform": "speechprompt", "inputs": [
                {"name": "audio", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "audio_file", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                        {"name": "scores", "datatype": "FP32", "shape": [-1, classes]}],
            "parameters": {"labels": info.get("labels") or [], "backbone": info.get("backbone"),
                           "backbone_kind": info.get("backbone_kind"), "state": info.get("state")}}
