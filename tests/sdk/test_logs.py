"""CloudWatch Logs' calls over a function's log, driven by boto3's unmodified `logs` client and the AWS CLI."""

import base64
import json
import os
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from test_boto3 import KEY_ID, SECRET, client, server, shell_example  # noqa: F401 (server is a fixture)

GROUP = "/aws/lambda/logs-fn"
PAYLOADS = [b"{}", b'{"a": 1}', b'{"long": "payload"}']


@pytest.fixture(scope="module")
def logs(server):
    lam = client(server, "lambda")
    lam.create_function(FunctionName="logs-fn", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    for payload in PAYLOADS:
        lam.invoke(FunctionName="logs-fn", Payload=payload)
    logs = client(server, "logs")
    deadline = time.time() + 10
    while time.time() < deadline:
        reports = logs.filter_log_events(logGroupName=GROUP, filterPattern="REPORT")["events"]
        if len(reports) == len(PAYLOADS):
            break
        time.sleep(0.2)
    return logs


def messages(events):
    return [e["message"] for e in events]


def test_filter_log_events_with_patterns_and_paging(logs):
    every = messages(logs.filter_log_events(logGroupName=GROUP)["events"])
    assert len(every) >= 4 * len(PAYLOADS)
    # Terms, a quoted phrase, exclusions; one event a page.
    pages = logs.get_paginator("filter_log_events").paginate(
        logGroupName=GROUP, filterPattern='"got an event" -"of 2 bytes"', PaginationConfig={"PageSize": 1}
    )
    found = [m for page in pages for m in messages(page["events"])]
    assert found == ["got an event of 8 bytes\n", "got an event of 19 bytes\n"]
    assert messages(logs.filter_log_events(logGroupName=GROUP, filterPattern="got 2")["events"]) == ["got an event of 2 bytes\n"]
    assert logs.filter_log_events(logGroupName=GROUP, filterPattern="GOT")["events"] == []
    page = logs.filter_log_events(logGroupName=GROUP, filterPattern="RequestId", limit=2)
    assert len(page["events"]) == 2 and page["nextToken"] and page["searchedLogStreams"] == []
    event = page["events"][0]
    assert set(event) == {"logStreamName", "timestamp", "message", "ingestionTime", "eventId"}
    # A time window: only the first invocation's events.
    first = logs.filter_log_events(logGroupName=GROUP, limit=4)["events"]
    window = logs.filter_log_events(logGroupName=GROUP, startTime=first[0]["timestamp"], endTime=first[0]["timestamp"])
    assert all(e["timestamp"] == first[0]["timestamp"] for e in window["events"])
    with pytest.raises(ClientError) as error:
        logs.filter_log_events(logGroupName=GROUP, filterPattern='"unterminated')
    assert error.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as error:
        logs.filter_log_events(logGroupName="/aws/lambda/missing")
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_get_log_events_both_directions(logs):
    stream = logs.describe_log_streams(logGroupName=GROUP)["logStreams"][0]["logStreamName"]
    every = messages(logs.filter_log_events(logGroupName=GROUP, logStreamNames=[stream])["events"])
    newest = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=3)
    assert messages(newest["events"]) == every[-3:]
    for start_from_head, key in [(True, "nextForwardToken"), (False, "nextBackwardToken")]:
        pages, token = [], None
        while True:
            args = {"nextToken": token} if token else {}
            page = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=5, startFromHead=start_from_head, **args)
            if not page["events"]:
                assert page[key] == token, "the end gives the same token back"
                break
            pages.append(messages(page["events"]))
            token = page[key]
        if not start_from_head:
            pages.reverse()
        assert [m for p in pages for m in p] == every
    with pytest.raises(ClientError) as error:
        logs.get_log_events(logGroupName=GROUP, logStreamName="missing")
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_aws_cli_filter_log_events(server, logs):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    command = ["aws", "logs", "filter-log-events", "--log-group-name", GROUP, "--filter-pattern", "got -2", "--page-size", "1"]
    listed = subprocess.run([*command, "--endpoint-url", server], env=env, capture_output=True, text=True, check=True)
    assert messages(json.loads(listed.stdout)["events"]) == ["got an event of 8 bytes\n", "got an event of 19 bytes\n"]


def test_describe_with_prefixes_and_orders(server, logs):
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/logs-")["logGroups"]
    assert [g["logGroupName"] for g in groups] == [GROUP]
    assert logs.describe_log_groups(logGroupNamePrefix="/nothing")["logGroups"] == []
    paged = [g["logGroupName"] for page in logs.get_paginator("describe_log_groups").paginate(PaginationConfig={"PageSize": 1}) for g in page["logGroups"]]
    assert GROUP in paged and len(paged) == len(set(paged))
    streams = logs.describe_log_streams(logGroupName=GROUP, orderBy="LastEventTime", descending=True)["logStreams"]
    assert streams and all("[$LATEST]" in s["logStreamName"] for s in streams)
    prefix = streams[0]["logStreamName"][:8]
    by_name = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=prefix, limit=1)["logStreams"]
    assert by_name[0]["logStreamName"].startswith(prefix)
    with pytest.raises(ClientError) as error:
        logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=prefix, orderBy="LastEventTime")
    assert error.value.response["Error"]["Code"] == "InvalidParameterException"


def test_retention_policy_and_delete_log_group(server):
    lam = client(server, "lambda")
    lam.create_function(FunctionName="logs-gone", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    lam.invoke(FunctionName="logs-gone", Payload=b"{}")
    logs = client(server, "logs")
    group = "/aws/lambda/logs-gone"
    deadline = time.time() + 10
    while time.time() < deadline and not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        time.sleep(0.2)
    logs.put_retention_policy(logGroupName=group, retentionInDays=14)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["retentionInDays"] == 14
    with pytest.raises(ClientError) as error:
        logs.put_retention_policy(logGroupName=group, retentionInDays=15)
    assert error.value.response["Error"]["Code"] == "InvalidParameterException"
    logs.delete_retention_policy(logGroupName=group)
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    logs.delete_log_group(logGroupName=group)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []
    with pytest.raises(ClientError) as error:
        logs.delete_log_group(logGroupName="/custom/missing")
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_logging_config_json_format_and_levels(server):
    """Lambda's JSON log format through boto3: the levels' defaults, the platform's records in the log tail, a level
    refused with the Text format."""
    lam = client(server, "lambda")
    code = {"ZipFile": shell_example()}
    json_format = {"LogFormat": "JSON"}
    created = lam.create_function(FunctionName="logs-json", Runtime="provided.al2023", Role="r", Handler="x", Code=code, LoggingConfig=json_format)
    assert created["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "INFO",
        "LogGroup": "/aws/lambda/logs-json",
    }
    reply = lam.invoke(FunctionName="logs-json", Payload=b"{}", LogType="Tail")
    tail = base64.b64decode(reply["LogResult"]).decode()
    records = [json.loads(line) for line in tail.splitlines() if line.startswith('{"time":')]
    assert [r["type"] for r in records] == ["platform.start", "platform.report"], tail
    assert records[1]["record"]["status"] == "success"
    assert records[1]["record"]["metrics"]["memorySizeMB"] == 128
    assert "got an event of 2 bytes" in tail

    updated = lam.update_function_configuration(FunctionName="logs-json", LoggingConfig={"SystemLogLevel": "WARN"})
    assert updated["LoggingConfig"]["SystemLogLevel"] == "WARN"
    with pytest.raises(ClientError) as error:
        lam.update_function_configuration(
            FunctionName="logs-json", LoggingConfig={"LogFormat": "Text", "ApplicationLogLevel": "DEBUG"}
        )
    assert error.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "LogLevel is not supported" in error.value.response["Error"]["Message"]
