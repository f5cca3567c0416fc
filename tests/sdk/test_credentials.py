"""A sandbox's session credentials used by boto3 as a function's own SDK uses them (`aws_session_token`, which
boto3 sends as X-Amz-Security-Token): its account's queues and functions, not another account's, never Ignis's
own API, and refused once the function is deleted."""

import json
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from test_boto3 import ignis_accounts, server, zip_bytes  # noqa: F401 (server is a fixture)

# A custom runtime whose every answer is its credentials, as JSON.
READER = r"""#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while true; do
  curl -sS -D /tmp/headers -o /tmp/event "$api/invocation/next" || exit 1
  id=$(tr -d '\r' < /tmp/headers | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')
  printf '{"key":"%s","secret":"%s","token":"%s"}' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$AWS_SESSION_TOKEN" > /tmp/response
  curl -sS -o /dev/null -X POST "$api/invocation/$id/response" --data-binary @/tmp/response
done
"""


def tenant(server, name):
    status, account = ignis_accounts(server, "POST", {"Name": name})
    assert status == 201, account
    return account


def client_for(server, service, key, secret, token=None):
    return boto3.client(
        service,
        endpoint_url=server,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"max_attempts": 1}),
    )


def code_of(call):
    with pytest.raises(ClientError) as error:
        call()
    return error.value.response["Error"]["Code"]


def test_boto3_with_a_sandboxs_session_credentials(server):
    alpha, beta = tenant(server, "boto-creds-alpha"), tenant(server, "boto-creds-beta")
    owner = client_for(server, "lambda", alpha["AccessKeyId"], alpha["SecretAccessKey"])
    runtime = {"Runtime": "provided.al2023", "Role": "arn:aws:iam::123456789012:role/r", "Handler": "bootstrap"}
    owner.create_function(FunctionName="reader", Code={"ZipFile": zip_bytes([("bootstrap", READER, 0o755)])}, **runtime)
    owner.create_function(FunctionName="other", Code={"ZipFile": zip_bytes([("bootstrap", READER, 0o755)])}, **runtime)
    answer = json.loads(owner.invoke(FunctionName="reader")["Payload"].read())
    assert answer["key"].startswith("ASIA") and len(answer["secret"]) == 40 and answer["token"]
    session = (answer["key"], answer["secret"], answer["token"])
    assert answer["secret"] not in json.dumps(owner.get_function(FunctionName="reader"), default=str)

    # Its account's queue; another account's queue names none.
    sqs = client_for(server, "sqs", *session)
    url = sqs.create_queue(QueueName="boto-session-inbox")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="from a sandbox")
    owners_sqs = client_for(server, "sqs", alpha["AccessKeyId"], alpha["SecretAccessKey"])
    assert [m["Body"] for m in owners_sqs.receive_message(QueueUrl=url)["Messages"]] == ["from a sandbox"]
    beta_url = client_for(server, "sqs", beta["AccessKeyId"], beta["SecretAccessKey"]).create_queue(QueueName="boto-private")["QueueUrl"]
    assert code_of(lambda: sqs.send_message(QueueUrl=beta_url, MessageBody="x")) == "AWS.SimpleQueueService.NonExistentQueue"

    # Another function of its account.
    lam = client_for(server, "lambda", *session)
    assert lam.invoke(FunctionName="other")["StatusCode"] == 200

    # Never Ignis's own API.
    request = AWSRequest(method="GET", url=server + "/ignis/accounts")
    SigV4Auth(Credentials(*session), "ignis", "us-east-1").add_auth(request)
    assert "X-Amz-Security-Token" in request.headers
    prepared = request.prepare()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(prepared.url, headers=dict(prepared.headers), method="GET"))
    assert refused.value.code == 403

    # A changed token: each service's invalid-token error.
    forged = session[2][:-1] + ("A" if session[2][-1] != "A" else "B")
    assert code_of(lambda: client_for(server, "lambda", session[0], session[1], forged).invoke(FunctionName="other")) == "UnrecognizedClientException"
    assert code_of(lambda: client_for(server, "sqs", session[0], session[1], forged).send_message(QueueUrl=url, MessageBody="x")) == "InvalidClientTokenId"
    logs = client_for(server, "logs", session[0], session[1], forged)
    assert code_of(lambda: logs.describe_log_groups()) == "UnrecognizedClientException"

    # Deleted, the function's credentials end.
    owner.delete_function(FunctionName="reader")
    assert code_of(lambda: lam.invoke(FunctionName="other")) == "UnrecognizedClientException"
    assert code_of(lambda: sqs.send_message(QueueUrl=url, MessageBody="x")) == "InvalidClientTokenId"
