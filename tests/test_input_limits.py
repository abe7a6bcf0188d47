"""Malformed input is a 400 with a message, never a 500: the hub service, the model server, and the parser they share.

Integers beyond 64 bits (SQL drivers and numpy overflow on them), JSON
nested deeper than the limit (Python's decoder raises RecursionError),
over-long integer literals (Python refuses more than 4,300 digits with a
bare ValueError), NaN/Infinity, and NUL characters in path parameters and
in the strings of a body.
"""

import asyncio
import json

import pytest
from serviceapp import PREFIX, call, make_service
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jupyter_kubeai import jsonlimits
from jupyter_kubeai.errors import InvalidInput
from jupyter_kubeai.serving.handlers import make_server_delegate
from jupyter_kubeai.serving.runtime import ModelRuntime

HUGE = "9" * 25
DEEP = "[" * 1000 + "]" * 1000
LONG_INT = "1" * 5000


# --- the parser --------------------------------------------------------------


@pytest.mark.parametrize("text", [
    '{"a": [1, 2.5, -3, "x", null, true, false, {"b": []}]}',
    '"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["',  # brackets in a string
    '["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "\\\\"]',  # escaped quote, backslash
    '[9223372036854775807, -9223372036854775808, 1234567890123456789, 1e308, -1e308, 1e-400]',
    '{"id": "12345678901234567890123", "f": 0.30000000000000004}',  # long digit runs in strings and floats
    "[" * 64 + "]" * 64,
    '[{"a": ' * 32 + "1" + "}]" * 32,
])
def test_what_json_allows_is_parsed_as_json_does(text):
    assert jsonlimits.loads(text.encode()) == json.loads(text)
    assert jsonlimits.loads(text) == json.loads(text)


@pytest.mark.parametrize("text, message", [
    ("[" * 65 + "]" * 65, "deeper than 64"),
    ('{"a": ' * 65 + "1" + "}" * 65, "deeper than 64"),
    ('["x", ' + "[" * 65 + "]" * 65 + "]", "deeper than 64"),
    (DEEP, "deeper than 64"),
    ("[9223372036854775808]", "does not fit in 64 bits"),
    ("[-9223372036854775809]", "does not fit in 64 bits"),
    (f'{{"a": {HUGE}}}', "does not fit in 64 bits"),
    (f"[{LONG_INT}]", "does not fit in 64 bits"),
    ("[1e309]", "too large for a 64-bit float"),
    ("[-1E+400]", "too large for a 64-bit float"),
    ("[NaN]", "NaN is not a JSON number"),
    ('{"x": Infinity}', "Infinity is not a JSON number"),
    ("[-Infinity]", "-Infinity is not a JSON number"),
    ("[1, 2", "not valid JSON"),
])
def test_what_hurts_a_server_is_refused_with_a_message(text, message):
    with pytest.raises(InvalidInput) as e:
        jsonlimits.loads(text.encode())
    assert message in e.value.message and e.value.status == 400


def test_undecodable_bytes_and_nul_characters():
    with pytest.raises(InvalidInput, match="not UTF-8"):
        jsonlimits.loads(b'["\xff"]')
    assert jsonlimits.loads(b'["a\\u0000b"]') == ["a\x00b"]  # data, where NULs may be (a model server's input)
    with pytest.raises(InvalidInput, match="NUL"):
        jsonlimits.loads(b'{"path": "a\\u0000b"}', allow_nul=False)
    with pytest.raises(InvalidInput, match="NUL"):
        jsonlimits.loads(b'{"a\\u0000": 1}', allow_nul=False)
    assert jsonlimits.loads(b'["a\\\\u0000"]', allow_nul=False) == ["a\\u0000"]  # an escaped backslash, no NUL


def test_depth_skips_strings():
    assert jsonlimits.depth(b'[[{"a": "[[[[\\"[["}], []]') == 3
    assert jsonlimits.depth(b'"\\\\" ') == 0


# --- the hub service ---------------------------------------------------------


@pytest.fixture
async def hub_url(hub, serve, service, tmp_path):
    share = tmp_path / "share"
    (share / "users/alice").mkdir(parents=True)
    (share / "users/alice/m.joblib").write_bytes(b"pretend joblib")
    app = make_service(tmp_path, share_root=str(share))
    url = serve(app.make_app()) + PREFIX
    code, answer = await call(url + "api/models", "alice-token", method="POST", body=json.dumps({"name": "m", "path": "m.joblib"}))
    assert code == 201, answer
    return url


@pytest.mark.parametrize("method, path, body, message", [
    ("GET", f"api/models/{HUGE}", None, "larger than any"),
    ("GET", f"api/models/1/versions/{HUGE}", None, "larger than any"),
    ("PATCH", f"api/models/{HUGE}/versions/1", "{}", "larger than any"),
    ("DELETE", f"api/models/1/versions/{'9' * 5000}", None, "larger than any"),
    ("PUT", "api/models/1/aliases/prod", f'{{"version": {HUGE}}}', "does not fit in 64 bits"),
    ("POST", "api/services", f'{{"name": "s", "model_id": {HUGE}}}', "does not fit in 64 bits"),
    ("POST", "api/services", f'{{"name": "s", "model_id": {LONG_INT}}}', "does not fit in 64 bits"),
    ("POST", "api/jobs", '{"name": "j", "parameters": ' + DEEP + "}", "deeper than 64"),
    ("POST", "api/jobs", '{"name": "j", "parameters": {"lr": NaN}}', "NaN is not a JSON number"),
    ("POST", "api/models", '{"name": "m2", "path": "m.joblib\\u0000.txt"}', "NUL"),
    ("GET", "api/jobs/j1/files/a%00b", None, "NUL"),
    ("GET", "serve/some-api/v1/models/x%00", None, "NUL"),
])
async def test_the_hub_service_answers_400_with_a_message(hub_url, method, path, body, message):
    code, answer = await call(hub_url + path, "alice-token", method=method, body=body,
                              allow_nonstandard_methods=True)
    assert code == 400, (path, answer)
    assert answer["reason"] == "invalid" and message in answer["message"], answer


async def test_an_id_at_the_64_bit_limit_is_just_not_found(hub_url):
    code, answer = await call(hub_url + f"api/models/{jsonlimits.INT64_MAX}", "alice-token")
    assert code == 404, answer


# --- the model server --------------------------------------------------------


PREDICTOR = """
class Predictor:
    def __init__(self, model_dir, config):
        pass

    def predict(self, payload):
        return [len(str(row)) for row in payload]
"""


@pytest.fixture
async def model_server(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "predictor.py").write_text(PREDICTOR)
    runtime = ModelRuntime(str(tmp_path / "model"), "m", max_batch_size=1)
    await runtime.load()
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(make_server_delegate(runtime, max_body_size=1 << 20), max_body_size=1 << 20)
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server.stop()
    await server.close_all_connections()
    await runtime.close()


@pytest.mark.parametrize("body, message", [
    ('{"instances": ' + DEEP + "}", "deeper than 64"),
    (f'{{"instances": [[{HUGE}]]}}', "does not fit in 64 bits"),
    (f'{{"instances": [[{LONG_INT}]]}}', "does not fit in 64 bits"),
    ('{"instances": [[NaN]]}', "NaN is not a JSON number"),
    ('{"instances": [[1e999]]}', "too large"),
    ("{", "not valid JSON"),
])
@pytest.mark.parametrize("path", ["/v1/models/m:predict", "/v1/models/m:predict?via=application"])
async def test_the_model_server_answers_400_in_the_one_error_shape(model_server, path, body, message):
    response = await AsyncHTTPClient().fetch(model_server + path, method="POST", body=body, raise_error=False)
    answer = json.loads(response.body)
    assert response.code == 400, answer
    assert answer["reason"] == "invalid" and message in answer["message"], answer
    assert answer["error"] == answer["message"]  # KServe's clients read "error"


async def test_the_model_server_still_answers_good_requests(model_server):
    response = await AsyncHTTPClient().fetch(model_server + "/v1/models/m:predict", method="POST",
                                             body=json.dumps({"instances": [[1, 2], [3]]}))
    assert json.loads(response.body) == {"predictions": [6, 3]}


async def test_a_body_over_the_limit_is_413_before_it_is_read(model_server):
    port = int(model_server.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Only the headers: a server that waited for the body would never answer.
    writer.write(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (2 << 20))
    data = await asyncio.wait_for(reader.read(), 30)  # to the end: the server closes the connection
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), data
    answer = json.loads(body)
    assert answer["reason"] == "too_large" and "larger than this model server takes" in answer["message"]
    # The server is still there.
    response = await AsyncHTTPClient().fetch(model_server + "/v2/health/live")
    assert response.code == 200
