"""Managed runtimes through the real clients: a Python handler deployed with boto3 and a Node.js handler deployed with
the AWS CLI, both written as for Lambda and zipped, run with Lambda's context, errors and logs."""

import base64
import json
import os
import pathlib
import subprocess
import tempfile

import pytest

from test_boto3 import KEY_ID, SECRET, client, run_server, zip_bytes


@pytest.fixture(scope="module")
def server():
    # The Python and Node.js bases are built once per machine (the runtimes crate's tests build them first).
    yield from run_server("--runtimes", "provided.al2023,python3.11,nodejs20.x")


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


PYTHON_APP = b"""
import boto3, json

def handler(event, context):
    print("got", json.dumps(event))
    if event.get("fail"):
        raise KeyError("missing")
    return {"hello": event.get("name"), "request": context.aws_request_id, "s3": boto3.client("s3", region_name="us-east-1").meta.service_model.service_name}
"""


def test_python_with_boto3(lam):
    created = lam.create_function(
        FunctionName="sdk-py", Runtime="python3.11", Role="r", Handler="app.handler",
        Code={"ZipFile": zip_bytes([("app.py", PYTHON_APP, 0o644)])},
    )
    assert (created["Runtime"], created["Handler"], created["PackageType"]) == ("python3.11", "app.handler", "Zip")
    answer = lam.invoke(FunctionName="sdk-py", Payload=json.dumps({"name": "boto3"}), LogType="Tail")
    assert "FunctionError" not in answer
    body = json.loads(answer["Payload"].read())
    assert (body["hello"], body["s3"]) == ("boto3", "s3")
    assert len(body["request"]) == 36
    assert 'got {"name": "boto3"}' in base64.b64decode(answer["LogResult"]).decode()
    failed = lam.invoke(FunctionName="sdk-py", Payload=b'{"fail": true}')
    assert failed["FunctionError"] == "Unhandled"
    error = json.loads(failed["Payload"].read())
    assert error["errorType"] == "KeyError" and error["stackTrace"], error


def test_node_with_the_aws_cli(server):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    cli = ["aws", "--endpoint-url", server, "lambda"]
    handler = b"export const handler = async (event, context) => ({ twice: event.n * 2, name: context.functionName });\n"
    with tempfile.TemporaryDirectory() as tmp:
        package = pathlib.Path(tmp) / "fn.zip"
        package.write_bytes(zip_bytes([("index.mjs", handler, 0o644)]))
        created = subprocess.run(
            [*cli, "create-function", "--function-name", "cli-node", "--runtime", "nodejs20.x", "--handler", "index.handler",
             "--role", "arn:aws:iam::123456789012:role/ignis", "--zip-file", f"fileb://{package}"],
            env=env, capture_output=True, text=True, check=True,
        )
        assert json.loads(created.stdout)["Runtime"] == "nodejs20.x"
        out = pathlib.Path(tmp) / "out.json"
        subprocess.run(
            [*cli, "invoke", "--function-name", "cli-node", "--payload", '{"n": 21}', str(out)],
            env=env, capture_output=True, text=True, check=True,
        )
        assert json.loads(out.read_text()) == {"twice": 42, "name": "cli-node"}


def test_a_runtime_not_installed_is_refused(lam):
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        lam.create_function(FunctionName="sdk-py12", Runtime="python3.12", Role="r", Handler="app.handler",
                            Code={"ZipFile": zip_bytes([("app.py", PYTHON_APP, 0o644)])})
    assert "ignis runtime build python3.12" in str(refused.value)
