"""boto3 against `ignis server --no-local-worker` with two `ignis worker` hosts joined to it.

Binaries come from IGNIS_BIN_DIR (default: target/debug of this repository).
"""

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

from test_boto3 import BIN_DIR, KEY_ID, SECRET, client, rust_example, zip_bytes

ENV = dict(os.environ, IGNIS_ACCESS_KEY_ID=KEY_ID, IGNIS_SECRET_ACCESS_KEY=SECRET)


def start(args):
    """Starts an ignis process and returns it with the address it listens on."""
    process = subprocess.Popen([str(BIN_DIR / "ignis"), *args], stdout=subprocess.PIPE, env=ENV, text=True)
    for line in process.stdout:
        match = re.search(r"listening on http://(\S+)", line)
        if match:
            return process, match.group(1)
    raise AssertionError(f"{args[0]} did not start")


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def cluster():
    data = tempfile.TemporaryDirectory()
    server, address = start(["server", "--listen", "127.0.0.1:0", "--data-dir", data.name + "/server", "--no-local-worker",
                             "--runtimes", "provided.al2023", "--egress", "none"])
    workers = [
        start(["worker", "--join", f"http://{address}", "--listen", "127.0.0.1:0", "--data-dir", f"{data.name}/w{n}", "--memory", "256",
               "--egress", "none"])[0]
        for n in range(2)
    ]
    endpoint = f"http://{address}"
    try:
        deadline = time.time() + 10
        while healthy_workers(endpoint) < 2:
            assert time.time() < deadline, "the workers did not join"
            time.sleep(0.1)
        yield endpoint
    finally:
        for process in [*workers, server]:
            stop(process)
        data.cleanup()


def healthy_workers(endpoint):
    listing = subprocess.run(
        [str(BIN_DIR / "ignis"), "workers", "--endpoint", endpoint], env=ENV, capture_output=True, text=True, check=True
    ).stdout
    return sum(1 for line in listing.splitlines()[1:] if line.split()[2] == "true")


def test_invokes_run_on_both_workers_and_their_logs_are_readable(cluster):
    lam = client(cluster, "lambda")
    lam.create_function(
        FunctionName="spread",
        Runtime="provided.al2023",
        Role="arn:aws:iam::123456789012:role/ignis",
        Handler="bootstrap",
        Code={"ZipFile": rust_example()},
        MemorySize=128,
        Timeout=5,
    )

    def invoke(n):
        answer = lam.invoke(FunctionName="spread", Payload=json.dumps({"name": f"n{n}"}))
        return json.loads(answer["Payload"].read())

    # Each worker has room for two sandboxes of 128 MB: four at once use both.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(invoke, range(12)))
    assert answers == [{"message": f"Hello, n{n}!"} for n in range(12)]

    logs = client(cluster, "logs")
    deadline = time.time() + 10
    while True:
        events = logs.filter_log_events(logGroupName="/aws/lambda/spread")["events"]
        reports = [e for e in events if e["message"].startswith("REPORT")]
        if len(reports) == 12 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(reports) == 12
    streams = {e["logStreamName"] for e in events}
    assert len(streams) >= 2


def test_a_streamed_response_from_a_worker_host(cluster):
    """A worker host answers a streamed invocation in frames as the runtime streams: the client reads the first
    chunk while the function still runs, and the same events as from the server's own worker."""
    from test_streaming import create_streamer, first_chunk_while_running, read_all, stream

    lam = client(cluster, "lambda")
    streamer = create_streamer(lam, "host-streamer", MemorySize=128)
    first_chunk_while_running(lam, streamer)
    payload, complete = read_all(stream(lam, streamer, {"mode": "fail"})["EventStream"])
    assert payload == b"first;"
    assert complete["ErrorCode"] == "Function.Broken"


def test_a_function_with_layers_starts_on_worker_hosts(cluster):
    """A worker host fetches the function's merged layers by their SHA-256, as it fetches code."""
    lam = client(cluster, "lambda")
    layer = lam.publish_layer_version(LayerName="host-layer", Content={"ZipFile": zip_bytes([("lib/data", b"layer", 0o644)])})
    lam.create_function(
        FunctionName="host-layered",
        Runtime="provided.al2023",
        Role="arn:aws:iam::123456789012:role/ignis",
        Handler="bootstrap",
        Code={"ZipFile": rust_example()},
        Layers=[layer["LayerVersionArn"]],
    )
    answer = lam.invoke(FunctionName="host-layered", Payload=json.dumps({"name": "opt"}))
    assert "FunctionError" not in answer
    assert json.loads(answer["Payload"].read()) == {"message": "Hello, opt!"}
