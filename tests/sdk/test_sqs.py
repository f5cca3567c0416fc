"""Ignis's SQS-compatible queues driven by boto3's unmodified `sqs` client and the AWS CLI."""

import hashlib
import json
import os
import struct
import subprocess
import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from test_boto3 import KEY_ID, SECRET, client, ignis_accounts, server  # noqa: F401 (server is a fixture)


@pytest.fixture(scope="module")
def sqs(server):
    return client(server, "sqs")


def md5_of_attributes(attributes):
    """SQS's MD5OfMessageAttributes, written from the SQS developer guide."""
    encoded = b""
    for name in sorted(attributes):
        value = attributes[name]
        data_type = value["DataType"]
        encoded += struct.pack(">I", len(name)) + name.encode()
        encoded += struct.pack(">I", len(data_type)) + data_type.encode()
        if "BinaryValue" in value:
            encoded += b"\x02" + struct.pack(">I", len(value["BinaryValue"])) + value["BinaryValue"]
        else:
            encoded += b"\x01" + struct.pack(">I", len(value["StringValue"].encode())) + value["StringValue"].encode()
    return hashlib.md5(encoded).hexdigest()


def error_of(call):
    with pytest.raises(ClientError) as error:
        call()
    return error.value.response["Error"]["Code"], error.value


def test_queue_round_trip(sqs, server):
    url = sqs.create_queue(QueueName="boto-orders", Attributes={"VisibilityTimeout": "45"})["QueueUrl"]
    assert url.startswith(server + "/") and url.endswith("/boto-orders")
    assert sqs.get_queue_url(QueueName="boto-orders")["QueueUrl"] == url
    assert url in sqs.list_queues(QueueNamePrefix="boto-")["QueueUrls"]

    attributes = {
        "kind": {"DataType": "String", "StringValue": "order ✓"},
        "amount": {"DataType": "Number", "StringValue": "12.5"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffbytes"},
        "custom": {"DataType": "String.label", "StringValue": "x"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="héllo", MessageAttributes=attributes)
    assert sent["MD5OfMessageBody"] == hashlib.md5("héllo".encode()).hexdigest()
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attributes)

    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
    [message] = got["Messages"]
    assert message["MessageId"] == sent["MessageId"] and message["Body"] == "héllo"
    assert message["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert message["MessageAttributes"] == attributes
    assert message["MD5OfMessageAttributes"] == md5_of_attributes(attributes)
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert int(message["Attributes"]["SentTimestamp"]) > 0
    selected = sqs.send_message(QueueUrl=url, MessageBody="b", MessageAttributes=attributes)
    chosen = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["kind", "amount"])["Messages"][0]
    assert set(chosen["MessageAttributes"]) == {"kind", "amount"} and chosen["MessageId"] == selected["MessageId"]
    assert chosen["MD5OfMessageAttributes"] == md5_of_attributes({k: attributes[k] for k in ("kind", "amount")})
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    sqs.delete_message(QueueUrl=url, ReceiptHandle=chosen["ReceiptHandle"])

    batch = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"m{i}", "MessageBody": f"body {i}"} for i in range(10)])
    assert len(batch["Successful"]) == 10 and not batch.get("Failed")
    for entry in batch["Successful"]:
        assert entry["MD5OfMessageBody"] == hashlib.md5(f"body {entry['Id'][1:]}".encode()).hexdigest()
    received = []
    for _ in range(10):
        received += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if len(received) == 10:
            break
    assert sorted(m["Body"] for m in received) == sorted(f"body {i}" for i in range(10))
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible", "VisibilityTimeout"])["Attributes"]
    assert counts == {"ApproximateNumberOfMessagesNotVisible": "10", "VisibilityTimeout": "45"}
    changed = sqs.change_message_visibility_batch(
        QueueUrl=url, Entries=[{"Id": "a", "ReceiptHandle": received[0]["ReceiptHandle"], "VisibilityTimeout": 0}, {"Id": "b", "ReceiptHandle": "forged", "VisibilityTimeout": 0}]
    )
    assert [e["Id"] for e in changed["Successful"]] == ["a"] and changed["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received[1:])])
    assert len(deleted["Successful"]) == 9
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "1"
    sqs.purge_queue(QueueUrl=url)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="boto-orders")


def test_errors_are_sqs_errors(sqs):
    url = sqs.create_queue(QueueName="boto-strict")["QueueUrl"]
    code, error = error_of(lambda: sqs.get_queue_url(QueueName="boto-missing"))
    assert code == "AWS.SimpleQueueService.NonExistentQueue" and isinstance(error, sqs.exceptions.QueueDoesNotExist)
    code, _ = error_of(lambda: sqs.send_message(QueueUrl=url.replace("boto-strict", "boto-missing"), MessageBody="x"))
    assert code == "AWS.SimpleQueueService.NonExistentQueue"
    code, error = error_of(lambda: sqs.send_message(QueueUrl=url, MessageBody="x" * (256 * 1024 + 1)))
    assert code == "InvalidParameterValue" and "262144" in str(error)
    code, error = error_of(lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle"))
    assert code == "ReceiptHandleIsInvalid" and isinstance(error, sqs.exceptions.ReceiptHandleIsInvalid)
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    code, error = error_of(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "x"} for i in range(11)]))
    assert code == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest" and isinstance(error, sqs.exceptions.TooManyEntriesInBatchRequest)
    code, error = error_of(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "same", "MessageBody": "x"}] * 2))
    assert code == "AWS.SimpleQueueService.BatchEntryIdsNotDistinct" and isinstance(error, sqs.exceptions.BatchEntryIdsNotDistinct)
    code, error = error_of(lambda: sqs.delete_message_batch(QueueUrl=url, Entries=[]))
    assert code == "AWS.SimpleQueueService.EmptyBatchRequest" and isinstance(error, sqs.exceptions.EmptyBatchRequest)
    code, error = error_of(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "-5"}))
    assert code == "InvalidAttributeValue" and isinstance(error, sqs.exceptions.InvalidAttributeValue)
    code, error = error_of(lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Nonsense"]))
    assert code == "InvalidAttributeName" and isinstance(error, sqs.exceptions.InvalidAttributeName)
    code, _ = error_of(lambda: sqs.create_queue(QueueName="boto-strict", Attributes={"DelaySeconds": "7"}))
    assert code == "QueueAlreadyExists"
    code, error = error_of(lambda: sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"}))
    assert code == "InvalidParameterValue" and "FIFO" in str(error)
    code, _ = error_of(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=25))
    assert code == "InvalidParameterValue"


def test_long_poll_and_visibility_timeout(sqs):
    url = sqs.create_queue(QueueName="boto-poll", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert time.monotonic() - started >= 0.9

    answer = {}

    def wait():
        started = time.monotonic()
        answer["messages"] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20).get("Messages", [])
        answer["waited"] = time.monotonic() - started

    waiter = threading.Thread(target=wait)
    waiter.start()
    for _ in range(50):
        time.sleep(0.3)
        sqs.send_message(QueueUrl=url, MessageBody="wake")
        if not waiter.is_alive():
            break
    waiter.join(timeout=30)
    assert answer["messages"][0]["Body"] == "wake" and answer["waited"] < 15
    sqs.purge_queue(QueueUrl=url)

    sqs.send_message(QueueUrl=url, MessageBody="again")
    first = sqs.receive_message(QueueUrl=url)["Messages"][0]
    deadline = time.monotonic() + 15
    second = None
    while second is None and time.monotonic() < deadline:
        second = (sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MessageSystemAttributeNames=["ApproximateReceiveCount"]).get("Messages") or [None])[0]
    assert second is not None and second["MessageId"] == first["MessageId"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    code, _ = error_of(lambda: sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=30))
    assert code == "ReceiptHandleIsInvalid"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])


def test_redrive_to_dead_letter_queue(sqs):
    dlq = sqs.create_queue(QueueName="boto-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    url = sqs.create_queue(QueueName="boto-src", Attributes={"RedrivePolicy": policy})["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="poison")
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"][0]["Body"] == "poison"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    dead = sqs.receive_message(QueueUrl=dlq, MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert [(m["Body"], m["MessageId"]) for m in dead] == [("poison", sent["MessageId"])]
    stored = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["RedrivePolicy"])
    assert stored == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [url]
    assert sqs.list_dead_letter_source_queues(QueueUrl=url)["queueUrls"] == []


def test_accounts_see_only_their_own_queues(sqs, server):
    url = sqs.create_queue(QueueName="boto-private")["QueueUrl"]
    status, tenant = ignis_accounts(server, "POST", {"Name": "boto-sqs-tenant"})
    assert status == 201, tenant
    other = boto3.client(
        "sqs",
        endpoint_url=server,
        region_name="us-east-1",
        aws_access_key_id=tenant["AccessKeyId"],
        aws_secret_access_key=tenant["SecretAccessKey"],
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(other.exceptions.QueueDoesNotExist):
        other.send_message(QueueUrl=url, MessageBody="intrusion")
    with pytest.raises(other.exceptions.QueueDoesNotExist):
        other.get_queue_url(QueueName="boto-private")
    assert other.list_queues().get("QueueUrls", []) == []
    own = other.create_queue(QueueName="boto-private")["QueueUrl"]
    assert own != url and f"/{tenant['AccountId']}/" in own


def test_aws_cli(server, sqs):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")

    def aws(*args):
        done = subprocess.run(["aws", "--endpoint-url", server, "sqs", *args], env=env, capture_output=True, text=True, check=True)
        return json.loads(done.stdout) if done.stdout.strip() else {}

    url = aws("create-queue", "--queue-name", "cli-queue")["QueueUrl"]
    aws("send-message", "--queue-url", url, "--message-body", "from the cli")
    [message] = aws("receive-message", "--queue-url", url, "--wait-time-seconds", "1")["Messages"]
    assert message["Body"] == "from the cli"
    aws("delete-message", "--queue-url", url, "--receipt-handle", message["ReceiptHandle"])
    assert aws("get-queue-attributes", "--queue-url", url, "--attribute-names", "ApproximateNumberOfMessages")["Attributes"] == {"ApproximateNumberOfMessages": "0"}
