"""The console's function list with many functions against few (see bench/console)."""

import argparse
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

import boto3
from botocore.config import Config
from playwright.sync_api import sync_playwright

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "sdk"))
from test_boto3 import ignis_accounts  # noqa: E402  (the SDK tests' signed call of Ignis's account API)

BIN_DIR = os.environ["IGNIS_BIN_DIR"]
KEY_ID = "AKIABENCHCONSOLE0000"
SECRET = "bench/console/secret/key"
BOOTSTRAP = b"#!/bin/sh\nexit 0\n"


def start(data):
    env = dict(os.environ, IGNIS_ACCESS_KEY_ID=KEY_ID, IGNIS_SECRET_ACCESS_KEY=SECRET)
    process = subprocess.Popen(
        [os.path.join(BIN_DIR, "ignis"), "server", "--listen", "127.0.0.1:0", "--data-dir", data, "--runtimes",
         "provided.al2023", "--egress", "none"],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    for line in process.stdout:
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            return process, match.group(1)
    raise SystemExit("the server did not start")


def account_with(server, name, count):
    """A new account with `count` functions; its key pair."""
    status, account = ignis_accounts(server, "POST", {"Name": name}, KEY_ID, SECRET)
    assert status == 201, account
    lam = boto3.client("lambda", endpoint_url=server, region_name="us-east-1", aws_access_key_id=account["AccessKeyId"],
                       aws_secret_access_key=account["SecretAccessKey"], config=Config(retries={"max_attempts": 1}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = (0o100755) << 16
        archive.writestr(info, BOOTSTRAP)
    for n in range(count):
        lam.create_function(FunctionName="fn-%05d" % n, Runtime="provided.al2023", Role="arn:aws:iam::1:role/r",
                            Handler="bootstrap", Code={"ZipFile": buffer.getvalue()})
    return account["AccessKeyId"], account["SecretAccessKey"]


def list_time(page, server, key, secret, count):
    """Milliseconds from the sign-in click to `count` rows in the function list."""
    page.goto(server + "/console/")
    page.evaluate("sessionStorage.clear()")
    page.reload()
    page.fill("#access-key", key)
    page.fill("#secret-key", secret)
    started = time.perf_counter()
    page.click("#login-form button")
    page.wait_for_function("n => document.querySelectorAll('#functions tbody tr[data-name]').length === n", arg=count,
                           timeout=120_000)
    elapsed = (time.perf_counter() - started) * 1000
    page.click("#sign-out")
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--functions", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, server = start(tmp + "/data")
        try:
            few = account_with(server, "console-few", 10)
            many = account_with(server, "console-many", args.functions)
            times = {10: [], args.functions: []}
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=os.environ.get("IGNIS_CHROMIUM", "/usr/bin/chromium"),
                                                     headless=True, args=["--no-sandbox"])
                page = browser.new_page()
                list_time(page, server, *few, 10)  # warms the page and the server's code paths
                for sample in range(args.samples):
                    for count, keys in ([(10, few), (args.functions, many)] if sample % 2 else [(args.functions, many), (10, few)]):
                        times[count].append(list_time(page, server, *keys, count))
                browser.close()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    print("Console: sign-in click to every function listed (ms, headless Chromium, release server, alternating samples)")
    print("  %-28s %6s %9s %9s %9s" % ("functions", "n", "min", "p50", "p90"))
    rows = {}
    for count in (10, args.functions):
        values = sorted(times[count])
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        rows[count] = statistics.median(values)
        print("  %-28s %6d %9.1f %9.1f %9.1f%s" % (count, len(values), values[0], rows[count], p90, "  baseline" if count == 10 else ""))
    print("  ratio of p50s: %.1fx for %dx the functions" % (rows[args.functions] / rows[10], args.functions // 10))


if __name__ == "__main__":
    main()
