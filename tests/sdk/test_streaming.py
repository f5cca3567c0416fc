"""Response streaming: boto3's `invoke_with_response_stream` reads Ignis's event stream unchanged.

The function is a bash custom runtime that streams its response over the Runtime API by hand (a chunked
`POST .../response` with `Lambda-Runtime-Function-Response-Mode: streaming`, error trailers included), so every
byte the worker sees is the test's own.
"""

import base64
import json

import pytest
from botocore.exceptions import ClientError

from test_boto3 import client, run_server, rust_example, zip_bytes

# Each event names a mode ("stream", "pause", "fail", "crash", "buffered") and how many MiB of zeros go between the
# first chunk ("first;") and the end (";last", error trailers, or the runtime's exit).
STREAMING_RUNTIME = r"""#!/bin/bash
set -eu
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
host="${AWS_LAMBDA_RUNTIME_API%:*}"
port="${AWS_LAMBDA_RUNTIME_API#*:}"
while true; do
  curl -sS -D /tmp/h -o /tmp/e "$api/invocation/next"
  id=$(tr -d '\r' < /tmp/h | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')
  mode=$(sed -n 's/.*"mode": *"\([a-z]*\)".*/\1/p' /tmp/e)
  mb=$(sed -n 's/.*"mb": *\([0-9]*\).*/\1/p' /tmp/e)
  echo "mode $mode"
  if [ "$mode" = buffered ]; then
    curl -sS -o /dev/null -X POST "$api/invocation/$id/response" -d '{"whole": true}'
    continue
  fi
  exec 3<>"/dev/tcp/$host/$port"
  printf 'POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: %s\r\n' "$id" "$AWS_LAMBDA_RUNTIME_API" >&3
  printf 'Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n' >&3
  printf 'Content-Type: text/plain; charset=utf-8\r\n' >&3
  printf 'Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n' >&3
  printf '6\r\nfirst;\r\n' >&3
  if [ "$mode" = pause ]; then sleep 3; fi
  for _ in $(seq 1 "${mb:-0}"); do
    printf '100000\r\n' >&3
    head -c 1048576 /dev/zero >&3
    printf '\r\n' >&3
  done
  case "$mode" in
    fail)
      body=$(printf '{"errorMessage": "broke mid-way", "errorType": "Broken"}' | base64 -w0)
      printf '0\r\nLambda-Runtime-Function-Error-Type: Function.Broken\r\n' >&3
      printf 'Lambda-Runtime-Function-Error-Body: %s\r\n\r\n' "$body" >&3
      ;;
    crash)
      exit 3
      ;;
    *)
      printf '5\r\n;last\r\n0\r\n\r\n' >&3
      ;;
  esac
  cat <&3 > /tmp/answer
  exec 3<&-
done
"""

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def lam():
    # A short body limit: a streamed response may still pause longer.
    for server in run_server("--body-timeout", "1"):
        yield client(server, "lambda")


def create_streamer(lam, name, **settings):
    """A function of STREAMING_RUNTIME named `name`."""
    code = {"ZipFile": zip_bytes([("bootstrap", STREAMING_RUNTIME.encode(), 0o755)])}
    lam.create_function(
        FunctionName=name, Runtime="provided.al2023", Role="r", Handler="x", Code=code, Timeout=60, **settings
    )
    return name


@pytest.fixture(scope="module")
def streaming(lam):
    return create_streamer(lam, "streamer")


def stream(lam, function, event, **kwargs):
    answer = lam.invoke_with_response_stream(FunctionName=function, Payload=json.dumps(event), **kwargs)
    assert answer["StatusCode"] == 200
    # The runtime's own, as Lambda passes it on; a response posted whole is JSON.
    expected = "application/json" if event.get("mode") == "buffered" else "text/plain; charset=utf-8"
    assert answer["ResponseStreamContentType"] == expected
    return answer


def read_all(events):
    """The payload's bytes and the InvokeComplete event."""
    payload, complete = bytearray(), None
    for event in events:
        if "PayloadChunk" in event:
            assert complete is None, "a chunk after the end"
            payload += event["PayloadChunk"]["Payload"]
        else:
            complete = event["InvokeComplete"]
    assert complete is not None, "no InvokeComplete"
    return bytes(payload), complete


def first_chunk_while_running(lam, function):
    """Streams 64 MiB with a second invocation of `function` throttled exactly while the first still runs (one at a
    time): it is, once the first chunk came, since 64 MiB more must pass through bounded buffers this client has not
    read. The InvokeComplete event."""
    lam.put_function_concurrency(FunctionName=function, ReservedConcurrentExecutions=1)
    try:
        answer = stream(lam, function, {"mode": "stream", "mb": 64}, LogType="Tail")
        assert answer["ExecutedVersion"] == "$LATEST"
        events = iter(answer["EventStream"])
        first = next(events)["PayloadChunk"]["Payload"]
        assert first.startswith(b"first;")
        with pytest.raises(lam.exceptions.TooManyRequestsException):
            lam.invoke(FunctionName=function, Payload=b'{"mode": "buffered"}')
        rest, complete = read_all(events)
        payload = first + rest
        assert len(payload) == len("first;") + 64 * MIB + len(";last")
        assert payload.endswith(b";last") and payload.count(b"\0") == 64 * MIB
        assert "ErrorCode" not in complete
        return complete
    finally:
        lam.delete_function_concurrency(FunctionName=function)


def test_first_chunk_arrives_while_the_function_runs(lam, streaming):
    complete = first_chunk_while_running(lam, streaming)
    assert "mode stream" in base64.b64decode(complete["LogResult"]).decode()


def test_a_stream_may_pause_longer_than_the_body_limit(lam, streaming):
    payload, complete = read_all(stream(lam, streaming, {"mode": "pause"})["EventStream"])
    assert (payload, complete) == (b"first;;last", {})


def test_error_trailers_end_the_stream_with_an_error(lam, streaming):
    payload, complete = read_all(stream(lam, streaming, {"mode": "fail", "mb": 1})["EventStream"])
    assert payload == b"first;" + b"\0" * MIB
    assert complete["ErrorCode"] == "Function.Broken"
    assert json.loads(complete["ErrorDetails"]) == {"errorMessage": "broke mid-way", "errorType": "Broken"}
    assert "LogResult" not in complete


def test_a_runtime_that_dies_mid_stream(lam, streaming):
    payload, complete = read_all(stream(lam, streaming, {"mode": "crash"})["EventStream"])
    assert payload == b"first;"
    assert complete["ErrorCode"] == "Runtime.ExitError"
    assert "exit status 3" in complete["ErrorDetails"]
    # The next invocation gets a new sandbox and streams again.
    payload, complete = read_all(stream(lam, streaming, {"mode": "stream"})["EventStream"])
    assert (payload, complete) == (b"first;;last", {})


def test_a_buffered_response_is_one_chunk(lam, streaming):
    payload, complete = read_all(stream(lam, streaming, {"mode": "buffered"})["EventStream"])
    assert json.loads(payload) == {"whole": True}
    assert complete == {}


def test_invoke_collects_a_streamed_response_up_to_6_mb(lam, streaming):
    answer = lam.invoke(FunctionName=streaming, Payload=json.dumps({"mode": "stream", "mb": 2}))
    assert "FunctionError" not in answer
    assert answer["Payload"].read() == b"first;" + b"\0" * (2 * MIB) + b";last"
    answer = lam.invoke(FunctionName=streaming, Payload=json.dumps({"mode": "stream", "mb": 7}))
    assert answer["FunctionError"] == "Unhandled"
    assert json.loads(answer["Payload"].read())["errorType"] == "Function.ResponseSizeTooLarge"


def test_over_200_mib_the_stream_ends_with_an_error(lam, streaming):
    payload, complete = read_all(stream(lam, streaming, {"mode": "stream", "mb": 200})["EventStream"])
    # What came before the limit went out; the chunk that crossed it did not.
    assert 199 * MIB < len(payload) <= 200 * MIB
    assert complete["ErrorCode"] == "Function.ResponseSizeTooLarge"


def test_the_official_rust_runtime_streams(lam):
    """`lambda_runtime`'s streaming response: its HTTP integration prelude (a JSON head, 8 NUL bytes), then the
    chunks, passed on as they are, with its Content-Type."""
    code = {"ZipFile": rust_example()}
    lam.create_function(FunctionName="rust-streamer", Runtime="provided.al2023", Role="r", Handler="x", Code=code)
    event = json.dumps({"stream": ["one,", "two"]})
    answer = lam.invoke_with_response_stream(FunctionName="rust-streamer", Payload=event)
    assert answer["ResponseStreamContentType"] == "application/vnd.awslambda.http-integration-response"
    payload, complete = read_all(answer["EventStream"])
    prelude, separator, body = payload.partition(b"\0" * 8)
    assert separator and body == b"one,two"
    assert json.loads(prelude)["statusCode"] == 200
    assert complete == {}
    # Its buffered answers come through the same call as one chunk.
    answer = lam.invoke_with_response_stream(FunctionName="rust-streamer", Payload=json.dumps({"name": "s"}))
    assert read_all(answer["EventStream"]) == (b'{"message":"Hello, s!"}', {})


def test_request_checks(lam, streaming):
    dry = lam.invoke_with_response_stream(FunctionName=streaming, InvocationType="DryRun", Payload=b"{}")
    assert dry["StatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_with_response_stream(FunctionName="nobody-here", Payload=b"{}")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke_with_response_stream(FunctionName=streaming, Payload=b"{not json")
    lam.put_function_concurrency(FunctionName=streaming, ReservedConcurrentExecutions=0)
    try:
        with pytest.raises(lam.exceptions.TooManyRequestsException):
            lam.invoke_with_response_stream(FunctionName=streaming, Payload=b"{}")
    finally:
        lam.delete_function_concurrency(FunctionName=streaming)
    with pytest.raises(ClientError) as error:
        lam.invoke_with_response_stream(FunctionName=streaming, Payload=b"{}", Qualifier="7")
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"
