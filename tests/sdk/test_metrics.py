"""`--metrics-listen`: the Prometheus text of a server that ran functions, read with prometheus_client's parser."""

import concurrent.futures
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_boto3 import client, run_server, rust_example
from test_esm import shell_function, wait_for


def free_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % s.getsockname()[1]


METRICS = free_address()


@pytest.fixture(scope="module")
def server():
    yield from run_server("--metrics-listen", METRICS)


def scrape(address=METRICS):
    """Every sample at /metrics, by metric family name."""
    with urllib.request.urlopen("http://%s/metrics" % address, timeout=10) as reply:
        assert reply.status == 200
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


def total(family, sample_name, **labels):
    """The sum of the samples `samples` finds in a scrape now (0 if there are none)."""
    return sum(samples(scrape(), family, sample_name, **labels))


def test_an_event_source_mapping_moves_its_counters_and_drains_the_queue_gauge(server):
    lam, sqs = client(server, "lambda"), client(server, "sqs")
    code = {"ZipFile": shell_function("")}
    lam.create_function(FunctionName="measured-esm", Runtime="provided.al2023", Role="r", Handler="x", Code=code)
    url = sqs.create_queue(QueueName="measured-esm")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sent = 6
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"m{i}", "MessageBody": f"m {i}"} for i in range(sent)])

    def depth():
        return samples(scrape(), "ignis_queue_messages", "ignis_queue_messages", queue=arn)

    # The queue gauges are refreshed every 5 s.
    assert wait_for(lambda: depth() == [sent], 30), scrape().get("ignis_queue_messages")

    def moved():
        batches = total("ignis_esm_batches", "ignis_esm_batches_total")
        return batches, total("ignis_esm_deleted_messages", "ignis_esm_deleted_messages_total")

    # One message a batch: each message is one batch, one invocation and one deletion.
    lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="measured-esm", BatchSize=1)
    assert wait_for(lambda: moved() == (sent, sent), 60), moved()
    assert total("ignis_invocations", "ignis_invocations_total", function="measured-esm") == sent
    assert wait_for(lambda: depth() == [0], 30), scrape().get("ignis_queue_messages")


CAPPED = free_address()


@pytest.fixture
def capped():
    """A server that gives 5 function versions labels of their own."""
    yield from run_server("--metrics-listen", CAPPED, "--metrics-functions", "5")


# Every sample of a scrape, at most: the label cap bounds the per-function series whatever runs.
MAX_SAMPLES = 1000


def test_scrapes_under_load_answer_and_stay_within_the_label_cap(capped):
    functions, threads, invocations = 20, 20, 200
    lams = [client(capped, "lambda") for _ in range(threads)]
    for i in range(functions):
        lams[0].create_function(
            FunctionName=f"loaded-{i}", Runtime="provided.al2023", Role="r", Handler="bootstrap",
            Code={"ZipFile": rust_example()},
        )

    def invoke(i):
        reply = lams[i % threads].invoke(FunctionName=f"loaded-{i % functions}", Payload=b'{"name":"load"}')
        return reply["StatusCode"], reply.get("FunctionError")

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        running = [pool.submit(invoke, i) for i in range(invocations)]
        # Scrape while the burst runs (at least once, at most 1000 times).
        for _ in range(1000):
            check_capped(scrape(CAPPED), functions)
            if all(f.done() for f in running):
                break
        results = [f.result() for f in running]
    assert results == [(200, None)] * invocations
    families = scrape(CAPPED)
    check_capped(families, functions)
    # Every invocation is counted, under its function's own labels (5 of them) or `_other`'s.
    counted = families["ignis_invocations"].samples
    assert len({s.labels["function"] for s in counted}) == 5 + 1
    assert sum(s.value for s in counted) == invocations


def check_capped(families, functions):
    """At most 5 functions with labels of their own, and `_other`, on every per-function metric; a bounded scrape."""
    for family in families.values():
        named = {s.labels["function"] for s in family.samples if "function" in s.labels}
        assert len(named - {"_other"}) <= 5, (family.name, named)
        assert named <= {f"loaded-{i}" for i in range(functions)} | {"_other"}, (family.name, named)
    size = sum(len(family.samples) for family in families.values())
    assert size <= MAX_SAMPLES, size
