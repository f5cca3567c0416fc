"""The web console at /console/, driven in headless Chromium (Debian's `chromium`) with Playwright: sign in, create a
function by uploading a zip, test-invoke it, see its log line and its charts move; a wrong key; a thousand functions;
queues and worker hosts.

With IGNIS_CONSOLE_SCREENSHOTS=DIR the test saves the screenshots the README shows."""

import os
import pathlib
import re
import time

import boto3
import pytest
from botocore.config import Config
from playwright.sync_api import expect, sync_playwright

from test_boto3 import KEY_ID, SECRET, client, ignis_accounts, run_server, shell_example

CHROMIUM = os.environ.get("IGNIS_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("IGNIS_CONSOLE_SCREENSHOTS")
# Every wait on the page is for something it shows, bounded generously.
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def server():
    yield from run_server()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        # Root runs Chromium only without its own sandbox.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], "the page threw"


def api_requests(page):
    """The requests the page sends to the API (every URL but the console's own files), as they happen."""
    sent = []
    page.on("request", lambda request: None if "/console/" in request.url else sent.append(request.url))
    return sent


def sign_in(page, server, key_id=KEY_ID, secret=SECRET):
    page.goto(server + "/console/")
    page.fill("#access-key", key_id)
    page.fill("#secret-key", secret)
    page.click("#login-form button")


def shot(page, name):
    if SCREENSHOTS:
        pathlib.Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(pathlib.Path(SCREENSHOTS) / name), full_page=True)


def test_the_console_loads_without_credentials_and_from_nowhere_else(server, page):
    loaded = []
    page.on("request", lambda request: loaded.append(request.url))
    page.goto(server + "/console")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.url.startswith(server + "/console/#")
    assert all(url.startswith(server + "/console") for url in loaded), loaded
    policy = page.request.get(server + "/console/").headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy


def test_sign_in_create_upload_invoke_logs_and_charts(server, page):
    sign_in(page, server)
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#who")).to_have_text(KEY_ID)
    expect(page.locator("#functions tbody")).to_contain_text("No functions yet.")
    assert page.evaluate("sessionStorage.getItem('ignis.secret')") == SECRET

    page.click("#create summary")
    page.fill("#create-form input[name=name]", "console-hello")
    page.select_option("#create-form select[name=runtime]", "provided.al2023")
    page.fill("#create-form input[name=handler]", "bootstrap")
    page.set_input_files(
        "#create-form input[name=zip]", files=[{"name": "hello.zip", "mimeType": "application/zip", "buffer": shell_example()}]
    )
    page.click("#create-form button")
    expect(page.locator("#function-name")).to_have_text("console-hello")
    expect(page.locator("#configuration")).to_contain_text("arn:aws:lambda:us-east-1:")
    expect(page.locator("#configuration")).to_contain_text("provided.al2023")
    expect(page.locator("#versions")).to_contain_text("$LATEST")
    expect(page.locator("figure[data-metric=invocations]")).to_have_attribute("data-total", "0")

    page.fill("#event", '{"from": "the browser"}')
    page.click("#test-form button")
    expect(page.locator("#test-status")).to_contain_text("Succeeded")
    expect(page.locator("#test-payload")).to_contain_text('"from": "the browser"')
    expect(page.locator("#test-log")).to_contain_text("got an event of")
    expect(page.locator("#test-log")).to_contain_text("REPORT RequestId:")
    # The charts are drawn again after the invocation, and count it.
    expect(page.locator("figure[data-metric=invocations]")).to_have_attribute("data-total", "1")
    expect(page.locator("figure[data-metric=errors]")).to_have_attribute("data-total", "0")
    assert page.locator("figure[data-metric=invocations] rect.bar").count() == 1
    assert int(page.locator("figure[data-metric=concurrency]").get_attribute("data-total")) == 1

    # The log line reaches the recent logs by following them.
    page.check("#follow")
    expect(page.locator("#logs")).to_contain_text("got an event of")
    shot(page, "function.png")

    # A bad event is refused on the page; a function error is shown as one.
    page.fill("#event", "{not json")
    page.click("#test-form button")
    expect(page.locator("#test-status")).to_contain_text("The event is not JSON")

    # Back on the list, the function shows its state and its invocation.
    page.click("text=Functions")
    row = page.locator('#functions tr[data-name="console-hello"]')
    expect(row).to_contain_text("Active")
    expect(row.locator("td").nth(4)).to_have_text("1")
    shot(page, "functions.png")


def test_a_wrong_key_gets_a_clear_message_and_no_retries(server, page):
    sent = api_requests(page)
    sign_in(page, server, secret="not-the-secret")
    expect(page.locator("#login-error")).to_contain_text("Sign-in refused")
    expect(page.locator("#login-error")).to_contain_text("signature")
    assert len(sent) == 1, sent
    assert page.evaluate("sessionStorage.getItem('ignis.key')") is None
    sign_in(page, server, key_id="AKIANOSUCHKEY0000000", secret="x")
    expect(page.locator("#login-error")).to_contain_text("Sign-in refused")
    assert len(sent) == 2, sent

    # A stored key that stops working ends the session at the first refusal, with the reason.
    page.evaluate("sessionStorage.setItem('ignis.key', %r); sessionStorage.setItem('ignis.secret', 'wrong')" % KEY_ID)
    sent.clear()
    page.reload()
    expect(page.locator("#login-error")).to_contain_text("The key was refused")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('ignis.key')") is None
    # The calls the functions page sent at once, and nothing after: the timers stopped with the session.
    first = len(sent)
    assert 1 <= first <= 4, sent
    page.goto(server + "/console/#/queues")
    expect(page.locator("#login")).to_be_visible()
    assert len(sent) == first, "no call is made without a key"


def test_queues_mappings_and_worker_hosts(server, page):
    sqs = client(server, "sqs")
    url = sqs.create_queue(QueueName="console-jobs")["QueueUrl"]
    for n in range(3):
        sqs.send_message(QueueUrl=url, MessageBody="job %d" % n)
    lam = client(server, "lambda")
    lam.create_function(
        FunctionName="console-worker", Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis",
        Handler="bootstrap", Code={"ZipFile": shell_example()},
    )
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="console-worker", Enabled=False)

    sign_in(page, server)
    page.click("text=Queues")
    row = page.locator("#queues tr", has_text="console-jobs")
    expect(row.locator("td").nth(1)).to_have_text("3")
    expect(page.locator("#mappings")).to_contain_text(mapping["UUID"])
    expect(page.locator("#mappings")).to_contain_text("console-worker")
    shot(page, "queues.png")

    page.click("text=Workers")
    expect(page.locator("#workers")).to_contain_text("(local)")
    expect(page.locator("#workers")).to_contain_text("Healthy")
    shot(page, "workers.png")

    # Another account sees its own functions only, and no worker hosts.
    status, tenant = ignis_accounts(server, "POST", {"Name": "console-tenant"})
    assert status == 201, tenant
    page.click("#sign-out")
    sign_in(page, server, tenant["AccessKeyId"], tenant["SecretAccessKey"])
    expect(page.locator("#functions tbody")).to_contain_text("No functions yet.")
    page.click("text=Workers")
    expect(page.locator("#workers")).to_contain_text("Only the administrator")


def test_a_thousand_functions(page):
    for address in run_server():
        lam = boto3.client(
            "lambda", endpoint_url=address, region_name="us-east-1", aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 1}, max_pool_connections=8),
        )
        code = shell_example()
        for n in range(1000):
            lam.create_function(
                FunctionName="fn-%04d" % n, Runtime="provided.al2023", Role="arn:aws:iam::123456789012:role/ignis",
                Handler="bootstrap", Code={"ZipFile": code},
            )
        lam.invoke(FunctionName="fn-0999", Payload=b"{}")
        started = time.monotonic()
        sign_in(page, address)
        expect(page.locator("#functions tbody tr")).to_have_count(1000)
        print("\nthe console listed 1000 functions %.0f ms after sign-in" % ((time.monotonic() - started) * 1000))
        expect(page.locator('#functions tr[data-name="fn-0999"] td').nth(4)).to_have_text("1")
        expect(page.locator("#summary")).to_contain_text("1000 functions")
        page.fill("#filter", "fn-09")
        expect(page.locator("#functions tbody tr:visible")).to_have_count(100)
        assert re.search(r"fn-0950", page.locator("#functions tbody").inner_text())
