"""Asynchronous invocation through boto3: event invoke configs, Event invokes and destinations."""

import json
import time

import pytest

from test_boto3 import client, run_server, rust_example


@pytest.fixture(scope="module")
def server():
    yield from run_server("--async-retry-delay", "1")


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


def create(lam, name, printing=False):
    env = {"Variables": {"PRINT_EVENT": "1"}} if printing else {}
    return lam.create_function(
        FunctionName=name, Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis", Handler="bootstrap",
        Code={"ZipFile": rust_example()}, Environment=env,
    )["FunctionArn"]


def printed_events(server, name):
    """The events a function created with printing=True received."""
    logs = client(server, "logs")
    events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"] if name else []
    return [json.loads(e["message"][len("event "):]) for e in events if e["message"].startswith("event ")]


def wait_for(check, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    return check()


def test_event_invoke_config_calls(lam):
    create(lam, "cfg")
    dest = create(lam, "cfg-dest")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName="cfg")
    put = lam.put_function_event_invoke_config(FunctionName="cfg", MaximumRetryAttempts=1, MaximumEventAgeInSeconds=300)
    assert put["FunctionArn"].endswith(":function:cfg:$LATEST")
    assert (put["MaximumRetryAttempts"], put["MaximumEventAgeInSeconds"]) == (1, 300)
    assert put["LastModified"].year >= 2024
    updated = lam.update_function_event_invoke_config(FunctionName="cfg", DestinationConfig={"OnFailure": {"Destination": dest}})
    assert updated["MaximumRetryAttempts"] == 1
    assert updated["DestinationConfig"]["OnFailure"]["Destination"] == dest
    got = lam.get_function_event_invoke_config(FunctionName="cfg")
    assert got["DestinationConfig"] == updated["DestinationConfig"]
    listed = lam.list_function_event_invoke_configs(FunctionName="cfg")["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [put["FunctionArn"]]
    lam.delete_function_event_invoke_config(FunctionName="cfg")
    assert lam.list_function_event_invoke_configs(FunctionName="cfg")["FunctionEventInvokeConfigs"] == []

    with pytest.raises(lam.exceptions.InvalidParameterValueException) as error:
        lam.put_function_event_invoke_config(FunctionName="cfg", DestinationConfig={"OnSuccess": {"Destination": dest.replace("cfg-dest", "nowhere")}})
    assert "is invalid" in str(error.value)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_event_invoke_config(FunctionName="cfg", DestinationConfig={"OnSuccess": {"Destination": "arn:aws:sqs:us-east-1:123456789012:none"}})
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName="nobody", MaximumRetryAttempts=0)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName="cfg", DeadLetterConfig={"TargetArn": "arn:aws:sqs:us-east-1:123456789012:none"})


def test_event_invoke_runs_and_sends_records_to_destinations(server, lam):
    ok = create(lam, "async-ok")
    successes = create(lam, "async-successes", printing=True)
    failures = create(lam, "async-failures", printing=True)
    lam.put_function_event_invoke_config(
        FunctionName="async-ok", MaximumRetryAttempts=1,
        DestinationConfig={"OnSuccess": {"Destination": successes}, "OnFailure": {"Destination": failures}},
    )
    answer = lam.invoke(FunctionName="async-ok", InvocationType="Event", Payload=json.dumps({"name": "async"}))
    assert answer["StatusCode"] == 202
    request_id = answer["ResponseMetadata"]["RequestId"]
    failed = lam.invoke(FunctionName="async-ok", InvocationType="Event", Payload=json.dumps({"fail": "on purpose"}))
    failed_id = failed["ResponseMetadata"]["RequestId"]

    records = wait_for(lambda: printed_events(server, "async-successes"))
    assert len(records) == 1
    record = records[0]
    assert record["requestContext"] == {
        "requestId": request_id, "functionArn": ok + ":$LATEST", "condition": "Success", "approximateInvokeCount": 1,
    }
    assert record["requestPayload"] == {"name": "async"}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"message": "Hello, async!"}

    # One retry a second later, then the failure record.
    records = wait_for(lambda: printed_events(server, "async-failures"))
    assert len(records) == 1
    record = records[0]
    assert record["requestContext"]["requestId"] == failed_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorMessage"] == "on purpose"


def test_event_payload_limit(lam):
    create(lam, "async-big")
    with pytest.raises(lam.exceptions.RequestTooLargeException):
        lam.invoke(FunctionName="async-big", InvocationType="Event", Payload=b'"' + b"x" * (1024 * 1024) + b'"')


def test_records_go_to_a_queue_destination(server, lam):
    sqs = client(server, "sqs")
    url = sqs.create_queue(QueueName="boto-records")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    create(lam, "boto-queue-dest")
    lam.put_function_event_invoke_config(
        FunctionName="boto-queue-dest", DestinationConfig={"OnSuccess": {"Destination": arn}}
    )
    request_id = lam.invoke(FunctionName="boto-queue-dest", InvocationType="Event", Payload=b'{"n": 1}')[
        "ResponseMetadata"]["RequestId"]
    messages = wait_for(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages"))
    record = json.loads(messages[0]["Body"])
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "Success"


def test_recursion_config(lam):
    create(lam, "recursive")
    assert lam.get_function_recursion_config(FunctionName="recursive")["RecursiveLoop"] == "Terminate"
    assert lam.put_function_recursion_config(FunctionName="recursive", RecursiveLoop="Allow")["RecursiveLoop"] == "Allow"
    assert lam.get_function_recursion_config(FunctionName="recursive")["RecursiveLoop"] == "Allow"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_recursion_config(FunctionName="no-such-function")
