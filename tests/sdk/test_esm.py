"""Event source mappings from Ignis's queues to functions, driven by boto3's unmodified
`lambda`, `sqs` and `logs` clients."""

import hashlib
import pathlib
import subprocess
import json
import time

import pytest
from botocore.exceptions import ClientError

from test_boto3 import client, server, zip_bytes  # noqa: F401 (server is a fixture)


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


@pytest.fixture(scope="module")
def sqs(server):
    return client(server, "sqs")


def jq_files():
    """The host's jq as a function packages it (no runtime base has it): bin/jq, and lib/ for the libraries the base
    lacks (/var/task/lib is on Lambda's LD_LIBRARY_PATH); run it as /var/task/bin/jq."""
    files = [("bin/jq", pathlib.Path("/usr/bin/jq").read_bytes(), 0o755)]
    listed = subprocess.run(["ldd", "/usr/bin/jq"], capture_output=True, text=True, check=True).stdout
    for path in (word for line in listed.splitlines() for word in line.split() if word.startswith("/")):
        name = pathlib.Path(path).name
        if name.startswith(("libjq", "libonig")):
            files.append((f"lib/{name}", pathlib.Path(path).read_bytes(), 0o644))
    return files


def shell_function(handler, files=()):
    """A custom runtime that logs each event on one line, then runs `handler` (which may write /tmp/response)."""
    script = (
        '#!/bin/sh\napi="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"\nwhile true; do\n'
        '  curl -sS -D /tmp/h -o /tmp/event "$api/invocation/next" || exit 1\n'
        "  id=$(tr -d '\\r' < /tmp/h | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')\n"
        "  echo '{}' > /tmp/response\n"
        "  cat /tmp/event; echo\n"
        f"  {handler}\n"
        '  curl -sS -o /dev/null -X POST "$api/invocation/$id/response" --data-binary @/tmp/response\n'
        "done\n"
    )
    return zip_bytes([("bootstrap", script.encode(), 0o755), *files])


def wait_for(check, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def left(sqs, url):
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[n]) for n in names)


def records(server, name):
    """Every SQS record the function was invoked with, from its log."""
    out = []
    for event in client(server, "logs").filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]:
        try:
            body = json.loads(event["message"])
        except ValueError:
            continue
        if isinstance(body, dict):
            out.extend(body.get("Records", []))
    return out


def test_mapping_lifecycle_and_delivery(server, lam, sqs):
    lam.create_function(FunctionName="boto-esm", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_function("")})
    url = sqs.create_queue(QueueName="boto-esm-source")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    created = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="boto-esm", BatchSize=5)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    uuid = created["UUID"]
    assert created["State"] == "Creating" and created["StateTransitionReason"] == "USER_INITIATED"
    assert created["EventSourceArn"] == arn and created["FunctionArn"].endswith(":function:boto-esm")
    assert created["BatchSize"] == 5 and created["MaximumBatchingWindowInSeconds"] == 0
    assert created["LastModified"].year >= 2024  # botocore parses the timestamp number
    assert created["EventSourceMappingArn"].endswith(f":event-source-mapping:{uuid}")

    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Enabled" and got["UUID"] == uuid
    listed = lam.list_event_source_mappings(FunctionName="boto-esm")["EventSourceMappings"]
    assert [m["UUID"] for m in listed] == [uuid]
    assert [m["UUID"] for m in lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]] == [uuid]
    paged = [m["UUID"] for page in lam.get_paginator("list_event_source_mappings").paginate(PaginationConfig={"PageSize": 1}) for m in page["EventSourceMappings"]]
    assert uuid in paged

    sent = sqs.send_message(
        QueueUrl=url, MessageBody="hello from boto3", MessageAttributes={"kind": {"DataType": "String", "StringValue": "greeting"}}
    )
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": f"batch {i}"} for i in range(4)])
    assert wait_for(lambda: left(sqs, url) == 0), "the mapping did not drain the queue"
    assert wait_for(lambda: len(records(server, "boto-esm")) == 5, 10)
    [first] = [r for r in records(server, "boto-esm") if r["body"] == "hello from boto3"]
    assert first["messageId"] == sent["MessageId"]
    assert first["md5OfBody"] == hashlib.md5(b"hello from boto3").hexdigest()
    assert first["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert first["messageAttributes"]["kind"]["stringValue"] == "greeting"
    assert (first["eventSource"], first["eventSourceARN"], first["awsRegion"]) == ("aws:sqs", arn, "us-east-1")
    assert first["attributes"]["ApproximateReceiveCount"] == "1"

    scaled = lam.update_event_source_mapping(UUID=uuid, ScalingConfig={"MaximumConcurrency": 3})
    assert scaled["ScalingConfig"] == {"MaximumConcurrency": 3} and scaled["State"] == "Updating"

    disabled = lam.update_event_source_mapping(UUID=uuid, Enabled=False)
    assert disabled["State"] == "Disabling"
    assert wait_for(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Disabled", 10)
    sqs.send_message(QueueUrl=url, MessageBody="held")
    time.sleep(1.5)
    assert left(sqs, url) == 1
    assert lam.update_event_source_mapping(UUID=uuid, Enabled=True)["State"] == "Enabling"
    assert wait_for(lambda: left(sqs, url) == 0)

    deleted = lam.delete_event_source_mapping(UUID=uuid)
    assert deleted["State"] == "Deleting" and deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_event_source_mapping(UUID=uuid)


def test_batch_item_failures_and_errors(server, lam, sqs):
    report = (
        "/var/task/bin/jq -c '{batchItemFailures: [.Records[] | select(.body | startswith(\"bad\")) | {itemIdentifier: .messageId}]}' "
        "/tmp/event > /tmp/response"
    )
    lam.create_function(FunctionName="boto-esm-picky", Runtime="provided.al2023", Role="r", Handler="x", Timeout=3, Code={"ZipFile": shell_function(report, jq_files())})
    dlq = sqs.create_queue(QueueName="boto-esm-dead")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    url = sqs.create_queue(QueueName="boto-esm-picky", Attributes={"VisibilityTimeout": "3", "RedrivePolicy": redrive})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    created = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName="boto-esm-picky", FunctionResponseTypes=["ReportBatchItemFailures"]
    )
    assert created["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": b, "MessageBody": b} for b in ("good-a", "bad-b", "good-c")])
    assert wait_for(lambda: left(sqs, url) == 0 and left(sqs, dlq) == 1, 60)
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in dead] == ["bad-b"]

    def code(call):
        with pytest.raises(ClientError) as error:
            call()
        return error.value.response["Error"]["Code"]

    assert code(lambda: lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="boto-nobody")) == "ResourceNotFoundException"
    assert code(lambda: lam.create_event_source_mapping(EventSourceArn=arn.replace("picky", "nowhere"), FunctionName="boto-esm-picky")) == "InvalidParameterValueException"
    assert code(lambda: lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="boto-esm-picky", BatchSize=100)) == "InvalidParameterValueException"
    assert code(lambda: lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="boto-esm-picky")) == "ResourceConflictException"
    assert code(lambda: lam.update_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000", Enabled=False)) == "ResourceNotFoundException"
    assert code(lambda: lam.delete_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000")) == "ResourceNotFoundException"
    lam.delete_event_source_mapping(UUID=created["UUID"])
