"""Request and response bodies of KServe v1 and the Open Inference Protocol v2.

Pure functions: bytes in, checked payloads out (or :class:`InvalidInput`
saying what is wrong), predictions in, JSON-able dicts out. The handlers
call these; nothing here knows about HTTP.

- v1: ``{"instances": [...]}`` -> ``{"predictions": [...]}``.
- v2: ``{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype",
  "data"}], "outputs"?}`` -> ``{"model_name", "model_version", "id"?,
  "outputs": [{"name", "shape", "datatype", "data"}]}``, ``data`` flat in
  row-major order (nested lists are accepted on input too).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from .. import jsonlimits
from ..errors import InvalidInput
from .model_dir import DATATYPES, Signature, TensorSpec

NUMERIC_KINDS = "biuf"
#: numpy dtype kind -> v2 datatype of outputs, by (kind, itemsize)
_OUT_DATATYPES = {np.dtype(v): k for k, v in DATATYPES.items() if v != "object"}


@dataclass
class Work:
    """The instances of one request, ready for ``predict`` (alone or batched)."""

    payload: object  # numpy array or list
    count: int  # number of instances (first dimension)
    key: tuple  # requests with equal keys may be batched together


def decode_json(body: bytes) -> object:
    """The request's JSON, within :mod:`jupyter_kubeai.jsonlimits`' limits (depth, 64-bit integers, finite numbers)."""
    if not body:
        raise InvalidInput("The request body is empty; send a JSON object.")
    return jsonlimits.loads(body)


def v1_instances(body: bytes) -> list:
    """The ``instances`` list of a v1 predict request."""
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise InvalidInput('A v1 predict request is a JSON object {"instances": [...]}.')
    instances = doc.get("instances", doc.get("inputs"))
    if instances is None:
        raise InvalidInput('The request has no "instances": send {"instances": [instance, ...]}.')
    if not isinstance(instances, list) or not instances:
        raise InvalidInput('"instances" must be a non-empty list, one item per instance.')
    return instances


@dataclass
class V2Input:
    name: str
    shape: tuple[int, ...]
    datatype: str
    data: np.ndarray  # already reshaped to ``shape``


def _flatten(data: list) -> list:
    """v2 ``data`` may be flat or nested (row-major); flatten nested lists."""
    if data and isinstance(data[0], list):
        out = []
        stack = [iter(data)]
        while stack:
            for item in stack[-1]:
                if isinstance(item, list):
                    stack.append(iter(item))
                    break
                out.append(item)
            else:
                stack.pop()
        return out
    return data


def _v2_tensor(raw, i: int) -> V2Input:
    where = f"inputs[{i}]"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be an object with name, shape, datatype and data.")
    name = raw.get("name")
    shape = raw.get("shape")
    datatype = raw.get("datatype")
    data = raw.get("data")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where} needs a name.")
    where = f"input {name!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers, e.g. [2, 20].")
    if datatype not in DATATYPES:
        raise InvalidInput(f"{where}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}.")
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: data must be a list (flat, row-major, or nested).")
    flat = _flatten(data)
    expected = math.prod(shape)
    if len(flat) != expected:
        raise InvalidInput(f"{where}: shape {shape} needs {expected} values, data has {len(flat)}.")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(f"{where}: BYTES data must be strings.")
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
    else:
        try:
            arr = np.asarray(flat)
        except (ValueError, TypeError):
            raise InvalidInput(f"{where}: data must be a flat list of numbers.") from None
        kind = arr.dtype.kind
        if arr.size and (kind not in NUMERIC_KINDS or arr.ndim != 1):
            raise InvalidInput(f"{where}: {datatype} data must be numbers, not {_describe(flat)}.")
        if datatype == "BOOL" and arr.size and kind != "b":
            raise InvalidInput(f"{where}: BOOL data must be true/false.")
        if datatype[0] in "IU" and kind == "f":
            raise InvalidInput(f"{where}: {datatype} data must be integers; use FP32 or FP64 for decimals.")
        try:
            with np.errstate(over="raise", invalid="raise"):
                arr = arr.astype(DATATYPES[datatype], casting="unsafe" if kind != "f" else "same_kind")
        except (OverflowError, FloatingPointError, TypeError):
            raise InvalidInput(f"{where}: values do not fit {datatype}.") from None
        if datatype[0] in "IU" and kind in "iu" and arr.size:
            # an out-of-range integer wraps silently in a cast: check it did not
            if not np.array_equal(arr, np.asarray(flat)):
                raise InvalidInput(f"{where}: values do not fit {datatype}.")
    return V2Input(name, tuple(shape), datatype, arr.reshape(shape))


def _first_non_number(values):
    for v in values:
        if isinstance(v, list):
            bad = _first_non_number(v)
            if bad is not _NUMBER:
                return bad
        elif not isinstance(v, (int, float)):
            return v
    return _NUMBER


_NUMBER = object()


def _describe(values: list) -> str:
    """The first non-number in (nested) ``values``, for an error message."""
    bad = _first_non_number(values)
    if bad is _NUMBER:
        return "numbers of mixed sizes"
    return f"{'null' if bad is None else type(bad).__name__} {json.dumps(bad)[:40]}"


def v2_request(body: bytes) -> tuple[dict, list[V2Input]]:
    """The checked inputs of a v2 infer request, and the request object itself."""
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise InvalidInput('A v2 infer request is a JSON object {"inputs": [{name, shape, datatype, data}]}.')
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput('The request needs "inputs": a non-empty list of {name, shape, datatype, data}.')
    if "id" in doc and not isinstance(doc["id"], str):
        raise InvalidInput('"id" must be a string.')
    return doc, [_v2_tensor(raw, i) for i, raw in enumerate(inputs)]


def _check_shape(shape: tuple[int, ...], spec: TensorSpec, where: str) -> None:
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape) or any(s != -1 and s != d for s, d in zip(spec.shape, shape)):
        want = "[" + ", ".join("N" if s == -1 else str(s) for s in spec.shape) + "]"
        raise InvalidInput(f"{where} has shape {list(shape)}; the model expects {want} (N: any).")


def payload_from_v1(instances: list, predictor, signature: Signature) -> Work:
    """The instances of a v1 request in the form the predictor takes."""
    if getattr(predictor, "input_format", "json") != "ndarray":
        return Work(instances, len(instances), ("json",))
    arr = as_numeric_array(instances, "instances")
    dtype = getattr(predictor, "input_dtype", None)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if signature.inputs:
        _check_shape(arr.shape, signature.inputs[0], "instances")
    return Work(arr, arr.shape[0], ("ndarray", arr.dtype.str, arr.shape[1:]))


def as_numeric_array(values: list, where: str) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):
        raise InvalidInput(f"{where} must be a rectangular list of numbers (every instance the same shape).") from None
    if arr.dtype.kind not in NUMERIC_KINDS:
        if arr.dtype.kind == "O":
            raise InvalidInput(f"{where} must be a rectangular list of numbers (every instance the same shape, no null).")
        raise InvalidInput(f"{where} must hold numbers only, not {_describe(values)}.")
    if arr.ndim == 0:
        raise InvalidInput(f"{where} must be a list of instances.")
    return arr


def payload_from_v2(inputs: list[V2Input], predictor, signature: Signature) -> Work:
    """The instances of a v2 request (one input tensor; first dimension: instances)."""
    if len(inputs) != 1:
        # Several named inputs: the predictor gets {name: array}, never batched.
        if signature.inputs and len(signature.inputs) != len(inputs):
            raise InvalidInput(f"The model takes {len(signature.inputs)} input(s), the request has {len(inputs)}.")
        return Work({t.name: t.data for t in inputs}, 0, ("dict", id(inputs)))
    tensor = inputs[0]
    if not tensor.shape:
        raise InvalidInput(f"input {tensor.name!r}: a scalar has no instances; use shape [1] or [1, ...].")
    if signature.inputs:
        spec = signature.inputs[0]
        _check_shape(tensor.shape, spec, f"input {tensor.name!r}")
        if spec.datatype and spec.datatype != tensor.datatype:
            raise InvalidInput(f"input {tensor.name!r} has datatype {tensor.datatype}; the model expects {spec.datatype}.")
    if getattr(predictor, "input_format", "json") != "ndarray":
        return Work(tensor.data.tolist(), tensor.shape[0], ("json",))
    if tensor.datatype == "BYTES":
        raise InvalidInput(f"input {tensor.name!r}: this model takes numbers, not BYTES.")
    arr = tensor.data
    dtype = getattr(predictor, "input_dtype", None)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return Work(arr, arr.shape[0], ("ndarray", arr.dtype.str, arr.shape[1:]))


def _jsonable(outputs):
    if isinstance(outputs, np.ndarray):
        return outputs.tolist()
    return list(outputs) if isinstance(outputs, tuple) else outputs


def _json_default(value):
    """numpy scalars and arrays inside a predictor's outputs (a list of np.float64...)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"predictor output of type {type(value).__name__} is not JSON")


_ENCODER = json.JSONEncoder(default=_json_default)  # one encoder: json.dumps(default=...) builds one per call


def dumps(doc) -> bytes:
    """A response body; numpy values in it become plain JSON."""
    return _ENCODER.encode(doc).encode()


def v1_response(outputs) -> dict:
    return {"predictions": _jsonable(outputs)}


def v2_output_tensor(outputs, spec: TensorSpec | None) -> dict:
    """One output tensor; raises TypeError when the outputs are not a rectangular tensor."""
    arr = outputs if isinstance(outputs, np.ndarray) else np.asarray(outputs)
    if arr.dtype.kind in "US" or (arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.ravel())):
        datatype = "BYTES"
        data = [str(v) for v in arr.ravel().tolist()]
    elif arr.dtype in _OUT_DATATYPES:
        datatype = _OUT_DATATYPES[arr.dtype]
        data = arr.ravel().tolist()
    else:
        raise TypeError(f"predictor output of dtype {arr.dtype} is not a v2 tensor")
    return {"name": spec.name if spec else "output-0", "datatype": datatype, "shape": list(arr.shape), "data": data}


def v2_response(outputs, *, model_name: str, model_version: str, request: dict, signature: Signature) -> dict:
    if isinstance(outputs, dict):  # a predictor with several named outputs
        tensors = [v2_output_tensor(v, TensorSpec(str(k))) for k, v in outputs.items()]
    else:
        tensors = [v2_output_tensor(outputs, signature.outputs[0] if signature.outputs else None)]
    response = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if "id" in request:
        response["id"] = request["id"]
    return response
