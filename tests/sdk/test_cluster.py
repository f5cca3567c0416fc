"""boto3 and the AWS CLI against two `ignis server --etcd` front ends of one cluster, on a one-member etcd (Debian's
`etcd`) the test starts: what is made through one front end is used through the other.

Binaries come from IGNIS_BIN_DIR (default: target/debug of this repository).
"""

import ctypes
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from botocore.exceptions import ClientError

from test_boto3 import KEY_ID, SECRET, client, rust_example
from test_workers import start, stop

ENV = dict(os.environ, IGNIS_ACCESS_KEY_ID=KEY_ID, IGNIS_SECRET_ACCESS_KEY=SECRET)


def die_with_parent():
    """In the child before exec: SIGKILL when this test process dies, however it dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_ports(n):
    """n free loopback ports, each another: held open together while they are chosen."""
    held = [socket.socket() for _ in range(n)]
    try:
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def eventually(check, within=30):
    deadline = time.time() + within
    while True:
        try:
            if check():
                return
        except ClientError:
            pass
        assert time.time() < deadline, "not within the bound"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fronts():
    data = tempfile.TemporaryDirectory()
    root = pathlib.Path(data.name)
    client_url, peer_url = (f"http://127.0.0.1:{port}" for port in free_ports(2))
    etcd = subprocess.Popen(
        [shutil.which("etcd") or "/usr/bin/etcd", "--name", "m0", "--data-dir", str(root / "etcd"),
         "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"m0={peer_url}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
    )
    (root / "master.key").write_bytes(os.urandom(32))
    (root / "objects").mkdir()
    processes = []
    try:
        endpoints = []
        for n in range(2):
            args = ["server", "--listen", "127.0.0.1:0", "--data-dir", str(root / f"front-{n}"), "--runtimes", "provided.al2023",
                    "--egress", "none", "--sandbox-pool", "0", "--etcd", client_url,
                    "--object-store", f"file://{root / 'objects'}", "--master-key-file", str(root / "master.key")]
            # etcd may still be electing itself: the first start waits for it.
            deadline = time.time() + 30
            while True:
                try:
                    process, address = start(args)
                    break
                except AssertionError:
                    assert time.time() < deadline, "the front end never reached etcd"
                    time.sleep(0.5)
            processes.append(process)
            endpoints.append(f"http://{address}")
        yield endpoints
    finally:
        for process in processes:
            stop(process)
        etcd.kill()
        etcd.wait()
        data.cleanup()


def test_a_function_made_through_one_front_end_is_invoked_through_the_other(fronts):
    first, second = client(fronts[0], "lambda"), client(fronts[1], "lambda")
    first.create_function(FunctionName="shared", Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis",
                          Handler="bootstrap", Code={"ZipFile": rust_example()})
    eventually(lambda: second.get_function(FunctionName="shared")["Configuration"]["State"] == "Active")
    answer = second.invoke(FunctionName="shared", Payload=json.dumps({"name": "cluster"}))
    assert answer["StatusCode"] == 200 and b"cluster" in answer["Payload"].read()

    # A reservation made through the second counts through the first.
    second.put_function_concurrency(FunctionName="shared", ReservedConcurrentExecutions=5)
    eventually(lambda: first.get_function_concurrency(FunctionName="shared").get("ReservedConcurrentExecutions") == 5)
    assert first.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 995

    # A stale RevisionId is refused whichever front end it is sent to.
    revision = first.get_function(FunctionName="shared")["Configuration"]["RevisionId"]
    second.update_function_configuration(FunctionName="shared", Description="changed", RevisionId=revision)
    eventually(lambda: first.get_function(FunctionName="shared")["Configuration"]["Description"] == "changed")
    with pytest.raises(ClientError) as refused:
        first.update_function_configuration(FunctionName="shared", Description="again", RevisionId=revision)
    assert refused.value.response["Error"]["Code"] == "PreconditionFailedException"


def test_logs_are_read_through_either_front_end_whichever_ran_the_invocation(fronts):
    first = client(fronts[0], "lambda")
    first.create_function(FunctionName="logged", Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis",
                          Handler="bootstrap", Code={"ZipFile": rust_example()})
    eventually(lambda: first.get_function(FunctionName="logged")["Configuration"]["State"] == "Active")
    # Through both: each invocation runs on the front end leading the function, or where it arrived while none did.
    for endpoint in fronts * 2:
        client(endpoint, "lambda").invoke(FunctionName="logged", Payload=b"{}")
    for endpoint in fronts:
        logs = client(endpoint, "logs")
        def starts(**page):
            pages = logs.get_paginator("filter_log_events").paginate(logGroupName="/aws/lambda/logged", **page)
            return [e["eventId"] for p in pages for e in p["events"] if e["message"].startswith("START")]
        eventually(lambda: len(starts()) == 4)
        assert starts(PaginationConfig={"PageSize": 1}) == starts()
        groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/logged")["logGroups"]
        assert [g["logGroupName"] for g in groups] == ["/aws/lambda/logged"]
        for stream in logs.describe_log_streams(logGroupName="/aws/lambda/logged")["logStreams"]:
            events = logs.get_log_events(logGroupName="/aws/lambda/logged", logStreamName=stream["logStreamName"],
                                         startFromHead=True)["events"]
            assert any(e["message"].startswith("START") for e in events)


def test_the_aws_cli_invokes_through_either_front_end(fronts):
    first = client(fronts[0], "lambda")
    first.create_function(FunctionName="cli", Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis",
                          Handler="bootstrap", Code={"ZipFile": rust_example()})
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    for endpoint in fronts:
        with tempfile.NamedTemporaryFile() as out:
            def invoked():
                done = subprocess.run(
                    ["aws", "--endpoint-url", endpoint, "lambda", "invoke", "--function-name", "cli",
                     "--payload", '{"name": "cli"}', out.name],
                    env=env, capture_output=True, text=True,
                )
                return done.returncode == 0
            eventually(invoked)
            assert b"cli" in pathlib.Path(out.name).read_bytes()


def test_queues_and_mappings_through_either_front_end(fronts):
    first, second = client(fronts[0], "sqs"), client(fronts[1], "sqs")
    # One front end serves the queues (the other hands it its requests); both answer alike.
    url = first.create_queue(QueueName="shared-jobs", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    assert second.get_queue_url(QueueName="shared-jobs")["QueueUrl"].endswith("/shared-jobs")
    second.send_message(QueueUrl=url, MessageBody="hello", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
    got = first.receive_message(QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=5)["Messages"]
    assert [m["Body"] for m in got] == ["hello"] and got[0]["MessageAttributes"]["k"]["StringValue"] == "v"
    second.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    assert first.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"] == {
        "ApproximateNumberOfMessages": "0"}
    with pytest.raises(ClientError) as missing:
        second.get_queue_url(QueueName="no-such-queue")
    assert missing.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"

    # An event source mapping made through one front end is seen and deleted through the other.
    lam_first, lam_second = client(fronts[0], "lambda"), client(fronts[1], "lambda")
    lam_first.create_function(FunctionName="mapped", Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis",
                              Handler="bootstrap", Code={"ZipFile": rust_example()})
    arn = second.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    eventually(lambda: lam_second.get_function(FunctionName="mapped")["Configuration"]["State"] == "Active")
    uuid = lam_second.create_event_source_mapping(EventSourceArn=arn, FunctionName="mapped", BatchSize=1)["UUID"]
    assert lam_first.get_event_source_mapping(UUID=uuid)["EventSourceArn"] == arn
    second.send_message(QueueUrl=url, MessageBody="for the mapping")
    eventually(lambda: first.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["ApproximateNumberOfMessages"] == "0"
               and first.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0")
    # Its pollers run on one front end (the function's partition leader); both show them running, then stopped.
    states = lambda: {c.get_event_source_mapping(UUID=uuid)["State"] for c in (lam_first, lam_second)}
    eventually(lambda: states() == {"Enabled"})
    lam_second.update_event_source_mapping(UUID=uuid, Enabled=False)
    eventually(lambda: states() == {"Disabled"})
    lam_first.delete_event_source_mapping(UUID=uuid)
    with pytest.raises(ClientError) as gone:
        lam_second.get_event_source_mapping(UUID=uuid)
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
