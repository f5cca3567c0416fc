"""Function URLs with boto3 (their configs) and plain HTTP clients (http.client, curl): an AWS_IAM URL signed by
botocore, the payload 2.0 event, a shaped answer, and a browser-style CORS preflight."""

import http.client
import json
import subprocess

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from test_boto3 import KEY_ID, SECRET, client, run_server, zip_bytes
from test_metrics import free_address

URLS = free_address()

# A shell function that answers with a statusCode object carrying the event it got.
HANDLER = """#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while true; do
  curl -sS -D /tmp/headers -o /tmp/event "$api/invocation/next"
  id=$(tr -d '\\r' < /tmp/headers | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')
  printf '{"statusCode": 202, "headers": {"x-echo": "yes"}, "cookies": ["seen=1"], "body": %s}' \\
    "$(sed 's/\\\\/\\\\\\\\/g; s/"/\\\\"/g; s/^/"/; s/$/"/' /tmp/event)" > /tmp/response
  curl -sS -o /dev/null -X POST "$api/invocation/$id/response" --data-binary @/tmp/response
done
"""


@pytest.fixture(scope="module")
def server():
    yield from run_server("--url-listen", URLS)


@pytest.fixture(scope="module")
def url(server):
    lam = client(server, "lambda")
    lam.create_function(
        FunctionName="web", Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis", Handler="bootstrap",
        Code={"ZipFile": zip_bytes([("bootstrap", HANDLER, 0o755)])},
    )
    config = lam.create_function_url_config(
        FunctionName="web", AuthType="AWS_IAM",
        Cors={"AllowOrigins": ["http://app.localhost"], "AllowMethods": ["POST"], "AllowHeaders": ["content-type"], "MaxAge": 60},
    )
    assert config["AuthType"] == "AWS_IAM" and config["InvokeMode"] == "BUFFERED"
    assert lam.get_function_url_config(FunctionName="web")["FunctionUrl"] == config["FunctionUrl"]
    assert [c["FunctionUrl"] for c in lam.list_function_url_configs(FunctionName="web")["FunctionUrlConfigs"]] == [config["FunctionUrl"]]
    return config["FunctionUrl"]


def request(url, method, path, body=b"", headers=None, sign=True):
    """An HTTP request to the URL's listener with the URL's host, signed by botocore for `lambda` when asked."""
    host = url.split("/")[2]
    headers = dict(headers or {})
    if sign:
        signed = AWSRequest(method=method, url="http://%s%s" % (host, path), data=body, headers=headers)
        SigV4Auth(Credentials(KEY_ID, SECRET), "lambda", "us-east-1").add_auth(signed)
        headers = dict(signed.headers)
    connection = http.client.HTTPConnection(URLS.split(":")[0], int(URLS.split(":")[1]), timeout=60)
    connection.putrequest(method, path, skip_host=True)
    connection.putheader("Host", host)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    reply = connection.getresponse()
    return reply.status, reply.getheaders(), reply.read()


def test_a_signed_request_reaches_the_function_and_its_answer_comes_back(url):
    status, headers, body = request(url, "POST", "/items?id=3", b'{"n": 1}', {"Content-Type": "application/json"})
    assert status == 202, body
    assert ("x-echo", "yes") in [(k.lower(), v) for k, v in headers]
    assert ("set-cookie", "seen=1") in [(k.lower(), v) for k, v in headers]
    event = json.loads(body)
    assert event["rawPath"] == "/items" and event["queryStringParameters"] == {"id": "3"}
    assert event["body"] == '{"n": 1}' and event["requestContext"]["http"]["method"] == "POST"
    status, _, body = request(url, "GET", "/", sign=False)
    assert status == 403 and json.loads(body) == {"Message": "Forbidden"}


def test_curl_preflight_is_answered_from_the_cors_config(url):
    host = url.split("/")[2]
    out = subprocess.run(
        ["curl", "-sS", "-i", "-X", "OPTIONS", "http://%s/" % URLS, "-H", "Host: " + host, "-H", "Origin: http://app.localhost",
         "-H", "Access-Control-Request-Method: POST", "-H", "Access-Control-Request-Headers: content-type"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.lower()
    assert out.startswith("http/1.1 200"), out
    assert "access-control-allow-origin: http://app.localhost" in out
    assert "access-control-allow-methods: post" in out
    assert "access-control-max-age: 60" in out


def test_url_config_errors_are_lambdas(server, url):
    lam = client(server, "lambda")
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_function_url_config(FunctionName="web", AuthType="NONE")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName="web", Qualifier="nope")
    updated = lam.update_function_url_config(FunctionName="web", Cors={"AllowOrigins": ["*"]})
    assert updated["Cors"]["AllowOrigins"] == ["*"] and updated["AuthType"] == "AWS_IAM"


def test_a_public_url_opens_with_add_permission(server):
    lam = client(server, "lambda")
    lam.create_function(
        FunctionName="public", Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis", Handler="bootstrap",
        Code={"ZipFile": zip_bytes([("bootstrap", HANDLER, 0o755)])},
    )
    url = lam.create_function_url_config(FunctionName="public", AuthType="NONE")["FunctionUrl"]
    assert request(url, "GET", "/", sign=False)[0] == 403
    lam.add_permission(FunctionName="public", StatementId="url", Action="lambda:InvokeFunctionUrl", Principal="*",
                       FunctionUrlAuthType="NONE")
    status, _, body = request(url, "GET", "/hello?x=1", sign=False)
    assert status == 202 and json.loads(body)["rawPath"] == "/hello"
    lam.remove_permission(FunctionName="public", StatementId="url")
    assert request(url, "GET", "/", sign=False)[0] == 403


# A bash runtime that streams its response with the HTTP integration prelude (status, headers, cookies, then eight
# NUL bytes), then "first;", `mb` MiB of zeros and ";last" (or exits mid-way, for "crash"; or answers whole, for
# "buffered").
PRELUDE_RUNTIME = r"""#!/bin/bash
set -eu
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
host="${AWS_LAMBDA_RUNTIME_API%:*}"
port="${AWS_LAMBDA_RUNTIME_API#*:}"
while true; do
  curl -sS -D /tmp/h -o /tmp/e "$api/invocation/next"
  id=$(tr -d '\r' < /tmp/h | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')
  mode=$(grep -o 'mode=[a-z]*' /tmp/e | head -1 | cut -d= -f2 || true)
  mb=$(grep -o 'mb=[0-9]*' /tmp/e | head -1 | cut -d= -f2 || true)
  if [ "$mode" = buffered ]; then
    curl -sS -o /dev/null -X POST "$api/invocation/$id/response" -d '{"statusCode": 203, "body": "whole"}'
    continue
  fi
  exec 3<>"/dev/tcp/$host/$port"
  printf 'POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: %s\r\n' "$id" "$AWS_LAMBDA_RUNTIME_API" >&3
  printf 'Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n' >&3
  printf 'Content-Type: application/vnd.awslambda.http-integration-response\r\n\r\n' >&3
  prelude='{"statusCode": 201, "headers": {"content-type": "text/plain", "x-streamed": "yes"}, "cookies": ["s=1"]}'
  printf '%x\r\n%s' $(( ${#prelude} + 8 + 6 )) "$prelude" >&3
  head -c 8 /dev/zero >&3
  printf 'first;\r\n' >&3
  for _ in $(seq 1 "${mb:-0}"); do
    printf '100000\r\n' >&3
    head -c 1048576 /dev/zero >&3
    printf '\r\n' >&3
  done
  if [ "$mode" = crash ]; then exit 3; fi
  printf '5\r\n;last\r\n0\r\n\r\n' >&3
  cat <&3 > /tmp/answer
  exec 3<&-
done
"""


def open_stream(url, path):
    """A signed GET of `path` through the URL's listener: the response, its body not read yet."""
    host = url.split("/")[2]
    signed = AWSRequest(method="GET", url="http://%s%s" % (host, path), data=b"")
    SigV4Auth(Credentials(KEY_ID, SECRET), "lambda", "us-east-1").add_auth(signed)
    connection = http.client.HTTPConnection(URLS.split(":")[0], int(URLS.split(":")[1]), timeout=60)
    connection.putrequest("GET", path, skip_host=True)
    connection.putheader("Host", host)
    for name, value in dict(signed.headers).items():
        connection.putheader(name, value)
    connection.endheaders()
    return connection.getresponse()


@pytest.fixture(scope="module")
def streaming_url(server):
    lam = client(server, "lambda")
    lam.create_function(
        FunctionName="streamer", Runtime="provided.al2023", Role="r", Handler="x", Timeout=60,
        Code={"ZipFile": zip_bytes([("bootstrap", PRELUDE_RUNTIME.encode(), 0o755)])},
    )
    lam.put_function_concurrency(FunctionName="streamer", ReservedConcurrentExecutions=1)
    config = lam.create_function_url_config(FunctionName="streamer", AuthType="AWS_IAM", InvokeMode="RESPONSE_STREAM")
    assert config["InvokeMode"] == "RESPONSE_STREAM"
    return config["FunctionUrl"]


def test_a_streamed_url_answers_as_the_function_streams(streaming_url):
    reply = open_stream(streaming_url, "/?mode=stream&mb=64")
    assert reply.status == 201
    assert reply.getheader("content-type") == "text/plain" and reply.getheader("x-streamed") == "yes"
    assert reply.getheader("set-cookie") == "s=1"
    assert reply.read(6) == b"first;"
    # The function is still streaming: its one slot of concurrency is taken.
    assert open_stream(streaming_url, "/?mode=stream").status == 429
    rest = reply.read()
    assert len(rest) == 64 * 1024 * 1024 + 5 and rest.endswith(b";last")


def test_a_stream_that_breaks_off_is_cut_short_and_a_whole_answer_is_mapped(streaming_url):
    reply = open_stream(streaming_url, "/?mode=crash&mb=1")
    assert reply.status == 201 and reply.read(6) == b"first;"
    with pytest.raises(http.client.IncompleteRead):
        reply.read()
    whole = open_stream(streaming_url, "/?mode=buffered")
    assert (whole.status, whole.read()) == (203, b"whole")
