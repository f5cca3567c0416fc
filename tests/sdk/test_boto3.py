"""Ignis driven by unmodified AWS clients: boto3's lambda and logs clients, and the AWS CLI.

Each test module starts a real `ignis server` on a free loopback port with its own data
directory. Binaries come from IGNIS_BIN_DIR (default: target/debug of this repository).
"""

import base64
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import time
import zipfile

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("IGNIS_BIN_DIR", ROOT / "target" / "debug"))
KEY_ID = "AKIABOTO3TESTKEY0000"
SECRET = "boto3/test/secret/key/for/ignis"


def zip_bytes(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content, mode in files:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def rust_example():
    return zip_bytes([("bootstrap", (BIN_DIR / "bootstrap").read_bytes(), 0o755)])


def shell_example():
    return zip_bytes([("bootstrap", (ROOT / "examples" / "hello-sh" / "bootstrap").read_bytes(), 0o755)])


# The runtimes a test server installs: the bases of the functions the tests deploy.
TEST_RUNTIMES = "provided.al2023,provided.al2"


def run_server(*args):
    """A server on a free port with its own data directory; yields its address, stops it after."""
    if "--runtimes" not in args:
        args = (*args, "--runtimes", TEST_RUNTIMES)
    if "--egress" not in args:
        # Servers of tests run side by side: only those about networking give sandboxes a network.
        args = (*args, "--egress", "none")
    data = tempfile.TemporaryDirectory()
    env = dict(os.environ, IGNIS_ACCESS_KEY_ID=KEY_ID, IGNIS_SECRET_ACCESS_KEY=SECRET)
    process = subprocess.Popen(
        [str(BIN_DIR / "ignis"), "server", "--listen", "127.0.0.1:0", "--data-dir", data.name + "/data", *args],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    address = None
    for line in process.stdout:
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            address = match.group(1)
            break
    assert address, "the server did not start"
    yield address
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        data.cleanup()


@pytest.fixture(scope="module")
def server():
    yield from run_server()


def client(server, service):
    return boto3.client(
        service,
        endpoint_url=server,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


def test_create_list_invoke_update_delete(lam):
    created = lam.create_function(
        FunctionName="boto-hello",
        Runtime="provided.al2023",
        Role="arn:aws:iam::123456789012:role/ignis",
        Handler="bootstrap",
        Code={"ZipFile": rust_example()},
        MemorySize=256,
        Timeout=5,
        Environment={"Variables": {"STAGE": "test"}},
    )
    assert created["FunctionName"] == "boto-hello"
    assert created["MemorySize"] == 256
    assert created["State"] == "Active"
    assert created["PackageType"] == "Zip"

    got = lam.get_function(FunctionName="boto-hello")
    assert got["Configuration"]["FunctionArn"] == created["FunctionArn"]
    by_arn = lam.get_function_configuration(FunctionName=created["FunctionArn"])
    assert by_arn["CodeSha256"] == created["CodeSha256"]

    names = [f["FunctionName"] for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 1}) for f in page["Functions"]]
    assert "boto-hello" in names

    answer = lam.invoke(FunctionName="boto-hello", Payload=json.dumps({"name": "boto3"}), LogType="Tail")
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    assert answer["ExecutedVersion"] == "$LATEST"
    assert json.loads(answer["Payload"].read()) == {"message": "Hello, boto3!"}
    log = base64.b64decode(answer["LogResult"]).decode()
    assert re.search(r"^REPORT RequestId: \S+\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\tMemory Size: 256 MB\tMax Memory Used: \d+ MB\tInit Duration: [\d.]+ ms$", log, re.M), log

    answer = lam.invoke(FunctionName="boto-hello", Payload=b'{"fail": "on purpose"}')
    assert answer["FunctionError"] == "Unhandled"
    assert json.loads(answer["Payload"].read())["errorMessage"] == "on purpose"

    updated = lam.update_function_configuration(FunctionName="boto-hello", Timeout=10, Description="updated")
    assert (updated["Timeout"], updated["Description"], updated["MemorySize"]) == (10, "updated", 256)
    updated = lam.update_function_code(FunctionName="boto-hello", ZipFile=shell_example())
    assert updated["CodeSha256"] != created["CodeSha256"]
    answer = lam.invoke(FunctionName="boto-hello", Payload=b'{"x": 1}')
    assert json.loads(answer["Payload"].read()) == {"echo": {"x": 1}}

    lam.delete_function(FunctionName="boto-hello")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="boto-hello")


def test_invocation_types(lam):
    lam.create_function(FunctionName="boto-types", Runtime="provided.al2", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    assert lam.invoke(FunctionName="boto-types", InvocationType="DryRun")["StatusCode"] == 204
    assert lam.invoke(FunctionName="boto-types", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202


def test_errors_are_typed(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="nobody-here")
    lam.create_function(FunctionName="boto-dup", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_function(FunctionName="boto-dup", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(FunctionName="boto-bad-zip", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": b"not a zip"})
    unchecked = boto3.client("lambda", endpoint_url=lam.meta.endpoint_url, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 1}, parameter_validation=False))
    with pytest.raises(ClientError) as error:
        unchecked.create_function(FunctionName="boto-mem", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()}, MemorySize=64)
    assert error.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(lam.exceptions.RequestTooLargeException):
        lam.invoke(FunctionName="boto-dup", Payload=b'"' + b"x" * (6 * 1024 * 1024) + b'"')
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName="boto-dup", Payload=b"{not json")


def test_bad_keys_are_refused(server):
    stranger = boto3.client("lambda", endpoint_url=server, region_name="us-east-1", aws_access_key_id="AKIASTRANGER00000000", aws_secret_access_key="nope", config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as error:
        stranger.list_functions()
    assert error.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_logs_client_reads_function_logs(server, lam):
    lam.create_function(FunctionName="boto-logs", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    request_id = lam.invoke(FunctionName="boto-logs", Payload=b"{}")["ResponseMetadata"]["RequestId"]
    logs = client(server, "logs")
    deadline = time.time() + 10
    messages = []
    while time.time() < deadline:
        events = logs.filter_log_events(logGroupName="/aws/lambda/boto-logs")["events"]
        messages = [e["message"] for e in events]
        if any(m.startswith("REPORT RequestId: " + request_id) for m in messages):
            break
        time.sleep(0.2)
    assert f"START RequestId: {request_id} Version: $LATEST\n" in messages
    assert "got an event of 2 bytes\n" in messages
    streams = logs.describe_log_streams(logGroupName="/aws/lambda/boto-logs")["logStreams"]
    assert len(streams) == 1 and "[$LATEST]" in streams[0]["logStreamName"]


def test_aws_cli(server, lam):
    lam.create_function(FunctionName="cli-fn", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    listed = subprocess.run(["aws", "--endpoint-url", server, "lambda", "list-functions"], env=env, capture_output=True, text=True, check=True)
    assert "cli-fn" in [f["FunctionName"] for f in json.loads(listed.stdout)["Functions"]]
    with tempfile.NamedTemporaryFile() as out:
        subprocess.run(["aws", "--endpoint-url", server, "lambda", "invoke", "--function-name", "cli-fn", "--payload", '{"via": "cli"}', out.name], env=env, capture_output=True, check=True)
        assert json.loads(pathlib.Path(out.name).read_text()) == {"echo": {"via": "cli"}}


def ignis_accounts(server, method, body=None, key_id=KEY_ID, secret=SECRET):
    """Ignis's own account API (`/ignis/accounts`), signed with SigV4 for the service `ignis` by botocore."""
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = json.dumps(body).encode() if body is not None else None
    request = AWSRequest(method=method, url=server + "/ignis/accounts", data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key_id, secret), "ignis", "us-east-1").add_auth(request)
    prepared = request.prepare()
    try:
        with urllib.request.urlopen(urllib.request.Request(prepared.url, data=data, headers=dict(prepared.headers), method=method)) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_accounts_are_isolated(server):
    made = {}
    for name in ("boto-tenant-a", "boto-tenant-b"):
        status, body = ignis_accounts(server, "POST", {"Name": name})
        assert status == 201, body
        assert re.fullmatch(r"\d{12}", body["AccountId"]) and body["SecretAccessKey"]
        made[name] = body
    status, listed = ignis_accounts(server, "GET")
    assert status == 200 and {"boto-tenant-a", "boto-tenant-b"} <= {a["Name"] for a in listed["Accounts"]}
    assert "SecretAccessKey" not in json.dumps(listed)

    def lambda_for(account):
        return boto3.client("lambda", endpoint_url=server, region_name="us-east-1", aws_access_key_id=account["AccessKeyId"], aws_secret_access_key=account["SecretAccessKey"], config=Config(retries={"max_attempts": 1}))

    a, b = made["boto-tenant-a"], made["boto-tenant-b"]
    lam_a, lam_b = lambda_for(a), lambda_for(b)
    created_a = lam_a.create_function(FunctionName="same", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    created_b = lam_b.create_function(FunctionName="same", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": rust_example()})
    assert created_a["FunctionArn"] == f"arn:aws:lambda:us-east-1:{a['AccountId']}:function:same"
    assert created_b["FunctionArn"] == f"arn:aws:lambda:us-east-1:{b['AccountId']}:function:same"
    assert [f["FunctionArn"] for f in lam_a.list_functions()["Functions"]] == [created_a["FunctionArn"]]
    assert [f["FunctionArn"] for f in lam_b.list_functions()["Functions"]] == [created_b["FunctionArn"]]

    # Same name, each account's own code.
    assert json.loads(lam_a.invoke(FunctionName="same", Payload=b'{"name": "a"}')["Payload"].read()) == {"echo": {"name": "a"}}
    assert json.loads(lam_b.invoke(FunctionName="same", Payload=b'{"name": "b"}')["Payload"].read()) == {"message": "Hello, b!"}

    # Another account's ARN is denied; a name only the other account has is not found.
    for call in (lambda: lam_b.get_function(FunctionName=created_a["FunctionArn"]), lambda: lam_b.invoke(FunctionName=created_a["FunctionArn"])):
        with pytest.raises(ClientError) as error:
            call()
        assert error.value.response["Error"]["Code"] == "AccessDeniedException"
        assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    lam_a.create_function(FunctionName="a-only", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    with pytest.raises(lam_b.exceptions.ResourceNotFoundException):
        lam_b.get_function(FunctionName="a-only")

    # Only the administrator manages accounts.
    status, body = ignis_accounts(server, "POST", {"Name": "boto-tenant-c"}, key_id=a["AccessKeyId"], secret=a["SecretAccessKey"])
    assert status == 403 and "not authorized" in body["message"]
    status, body = ignis_accounts(server, "POST", {"Name": "boto-tenant-a"})
    assert status == 409


def test_function_concurrency(lam):
    lam.create_function(FunctionName="boto-conc", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="boto-conc")
    assert lam.put_function_concurrency(FunctionName="boto-conc", ReservedConcurrentExecutions=2)["ReservedConcurrentExecutions"] == 2
    assert lam.get_function_concurrency(FunctionName="boto-conc")["ReservedConcurrentExecutions"] == 2
    assert lam.get_function(FunctionName="boto-conc")["Concurrency"] == {"ReservedConcurrentExecutions": 2}
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_concurrency(FunctionName="boto-conc", ReservedConcurrentExecutions=1000)
    # A reservation of 0 throttles every invocation.
    lam.put_function_concurrency(FunctionName="boto-conc", ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException) as throttled:
        lam.invoke(FunctionName="boto-conc", Payload=b"{}")
    assert throttled.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    lam.delete_function_concurrency(FunctionName="boto-conc")
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="boto-conc")
    assert lam.invoke(FunctionName="boto-conc", Payload=b"{}")["StatusCode"] == 200
    lam.delete_function(FunctionName="boto-conc")


def test_account_settings(lam):
    before = lam.get_account_settings()
    assert before["AccountLimit"]["ConcurrentExecutions"] == 1000
    assert before["AccountLimit"]["CodeSizeZipped"] == 52428800
    lam.create_function(FunctionName="boto-settings", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    lam.put_function_concurrency(FunctionName="boto-settings", ReservedConcurrentExecutions=3)
    after = lam.get_account_settings()
    assert after["AccountUsage"]["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1
    assert after["AccountUsage"]["TotalCodeSize"] > before["AccountUsage"]["TotalCodeSize"]
    assert after["AccountLimit"]["UnreservedConcurrentExecutions"] == before["AccountLimit"]["UnreservedConcurrentExecutions"] - 3
    lam.delete_function(FunctionName="boto-settings")


def test_versions_and_aliases(lam):
    def runtime(tag):
        script = (
            '#!/bin/sh\napi="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"\nwhile true; do\n'
            '  curl -sS -D /tmp/h -o /tmp/e "$api/invocation/next" || exit 1\n'
            "  id=$(tr -d '\\r' < /tmp/h | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')\n"
            f'  curl -sS -o /dev/null -X POST "$api/invocation/$id/response" -d "\\"{tag} $AWS_LAMBDA_FUNCTION_VERSION\\""\n'
            "done\n"
        )
        return zip_bytes([("bootstrap", script.encode(), 0o755)])

    lam.create_function(FunctionName="boto-versions", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": runtime("one")})
    v1 = lam.publish_version(FunctionName="boto-versions", Description="first")
    assert (v1["Version"], v1["Description"]) == ("1", "first")
    assert v1["FunctionArn"].endswith(":boto-versions:1")
    lam.update_function_code(FunctionName="boto-versions", ZipFile=runtime("two"))
    assert lam.publish_version(FunctionName="boto-versions")["Version"] == "2"
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName="boto-versions")["Versions"]]
    assert versions == ["$LATEST", "1", "2"]
    listed = lam.list_functions(FunctionVersion="ALL")["Functions"]
    assert [f["Version"] for f in listed if f["FunctionName"] == "boto-versions"] == ["$LATEST", "1", "2"]

    alias = lam.create_alias(FunctionName="boto-versions", Name="prod", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.0}})
    assert alias["AliasArn"].endswith(":boto-versions:prod")
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.0}
    answer = lam.invoke(FunctionName="boto-versions", Qualifier="prod", Payload=b"{}")
    assert answer["ExecutedVersion"] == "1"
    assert json.loads(answer["Payload"].read()) == "one 1"
    answer = lam.invoke(FunctionName="boto-versions", Qualifier="2", Payload=b"{}")
    assert (answer["ExecutedVersion"], json.loads(answer["Payload"].read())) == ("2", "two 2")
    assert lam.get_function(FunctionName="boto-versions", Qualifier="1")["Configuration"]["Version"] == "1"

    lam.update_alias(FunctionName="boto-versions", Name="prod", FunctionVersion="2", RoutingConfig={})
    assert lam.get_alias(FunctionName="boto-versions", Name="prod")["FunctionVersion"] == "2"
    assert [a["Name"] for a in lam.list_aliases(FunctionName="boto-versions")["Aliases"]] == ["prod"]
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName="boto-versions", Qualifier="2")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="boto-versions", Qualifier="nope", Payload=b"{}")
    lam.delete_alias(FunctionName="boto-versions", Name="prod")
    lam.delete_function(FunctionName="boto-versions", Qualifier="1")
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName="boto-versions")["Versions"]] == ["$LATEST", "2"]
    lam.delete_function(FunctionName="boto-versions")


def test_provisioned_concurrency(lam):
    lam.create_function(
        FunctionName="boto-provisioned", Runtime="provided.al2023", Role="r", Handler="x",
        Code={"ZipFile": shell_example()}, Publish=True,
    )
    lam.create_alias(FunctionName="boto-provisioned", Name="live", FunctionVersion="1")
    put = lam.put_provisioned_concurrency_config(
        FunctionName="boto-provisioned", Qualifier="live", ProvisionedConcurrentExecutions=1
    )
    assert put["RequestedProvisionedConcurrentExecutions"] == 1
    assert put["Status"] in ("IN_PROGRESS", "READY")
    deadline = time.monotonic() + 30
    while True:
        config = lam.get_provisioned_concurrency_config(FunctionName="boto-provisioned", Qualifier="live")
        if config["Status"] == "READY" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (config["Status"], config["AllocatedProvisionedConcurrentExecutions"]) == ("READY", 1)
    answer = lam.invoke(FunctionName="boto-provisioned", Qualifier="live", Payload=b"{}", LogType="Tail")
    assert answer["StatusCode"] == 200
    assert "Init Duration" not in base64.b64decode(answer["LogResult"]).decode()
    listed = lam.list_provisioned_concurrency_configs(FunctionName="boto-provisioned")["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == ["live"]
    with pytest.raises(ClientError) as error:
        lam.put_provisioned_concurrency_config(FunctionName="boto-provisioned", Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
    assert error.value.response["Error"]["Code"] == "InvalidParameterValueException"
    lam.delete_provisioned_concurrency_config(FunctionName="boto-provisioned", Qualifier="live")
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName="boto-provisioned", Qualifier="live")
    lam.delete_function(FunctionName="boto-provisioned")
