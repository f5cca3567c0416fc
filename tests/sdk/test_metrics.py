"""`--metrics-listen`: the Prometheus text of a server that ran functions, read with prometheus_client's parser."""

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_boto3 import client, run_server, rust_example


def free_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % s.getsockname()[1]


METRICS = free_address()


@pytest.fixture(scope="module")
def server():
    yield from run_server("--metrics-listen", METRICS)


def scrape():
    """Every sample at /metrics, by metric family name."""
    with urllib.request.urlopen("http://%s/metrics" % METRICS, timeout=10) as reply:
        text = reply.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families, family, sample_name, **labels):
    """The values of `sample_name` in `family` whose labels include `labels`."""
    found = families.get(family)
    return [s.value for s in (found.samples if found else []) if s.name == sample_name and labels.items() <= s.labels.items()]


def test_invocations_are_counted_per_function_and_version(server):
    lam = client(server, "lambda")
    lam.create_function(
        FunctionName="measured", Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis",
        Handler="bootstrap", Code={"ZipFile": rust_example()},
    )
    version = lam.publish_version(FunctionName="measured")["Version"]
    lam.create_alias(FunctionName="measured", Name="live", FunctionVersion=version)
    assert lam.invoke(FunctionName="measured", Payload=b'{"name":"a"}')["StatusCode"] == 200
    assert lam.invoke(FunctionName="measured", Payload=b'{"name":"b"}')["StatusCode"] == 200
    failed = lam.invoke(FunctionName="measured", Qualifier="live", Payload=b'{"fail":"no"}')
    assert failed["FunctionError"] == "Unhandled"

    families = scrape()
    latest = {"function": "measured", "version": "$LATEST"}
    # An alias's invocation counts for the version it ran.
    published = {"function": "measured", "version": version}
    # The parser names a counter's family without `_total`, its samples with it.
    assert samples(families, "ignis_invocations", "ignis_invocations_total", **latest) == [2.0]
    assert samples(families, "ignis_invocations", "ignis_invocations_total", **published) == [1.0]
    assert samples(families, "ignis_errors", "ignis_errors_total", **published) == [1.0]
    assert samples(families, "ignis_errors", "ignis_errors_total", **latest) == []
    assert samples(families, "ignis_cold_starts", "ignis_cold_starts_total", **latest) == [1.0]
    assert families["ignis_duration_seconds"].type == "histogram"
    assert samples(families, "ignis_duration_seconds", "ignis_duration_seconds_count", **latest) == [2.0]
    buckets = samples(families, "ignis_duration_seconds", "ignis_duration_seconds_bucket", le="+Inf", **latest)
    assert buckets == [2.0]
    assert samples(families, "ignis_init_duration_seconds", "ignis_init_duration_seconds_count", **latest) == [1.0]
    assert samples(families, "ignis_concurrent_executions", "ignis_concurrent_executions", **latest) == [0.0]
    # Ignis's own: requests by API operation.
    assert samples(families, "ignis_requests", "ignis_requests_total", operation="Invoke") == [3.0]
    assert samples(families, "ignis_requests", "ignis_requests_total", operation="PublishVersion") == [1.0]
