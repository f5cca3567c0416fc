"""GetFunction's `Code.Location` through boto3: a link valid for ten minutes from which the
deployed code downloads with plain HTTP (no signing), as deployment tools fetch it; the zip holds
the files uploaded, with their modes as stored (0755 if any execute bit, else 0644); a changed link
is refused."""

import io
import urllib.error
import urllib.request
import zipfile

import pytest

from test_boto3 import client, server, zip_bytes  # noqa: F401 (server is a fixture)

FILES = [
    ("bootstrap", b"#!/bin/sh\nexit 0\n", 0o755),
    ("lib/data.txt", b"some data\n" * 1000, 0o644),
    ("lib/deeper/tool", bytes(range(256)) * 64, 0o700),
]
# Stored code keeps only whether a file is executable.
STORED_MODE = {0o755: 0o755, 0o644: 0o644, 0o700: 0o755}


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


def download(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"] == "application/zip"
        return response.read()


def refusal(url):
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(url, timeout=30)
    return error.value.code, error.value.headers["x-amzn-ErrorType"]


def files_of(zip_file):
    with zipfile.ZipFile(io.BytesIO(zip_file)) as archive:
        return {
            info.filename: (archive.read(info), (info.external_attr >> 16) & 0o777)
            for info in archive.infolist()
            if not info.is_dir()
        }


def test_code_downloads_from_its_location(lam, server):
    lam.create_function(
        FunctionName="located",
        Runtime="provided.al2023",
        Role="arn:aws:iam::123456789012:role/ignis",
        Handler="bootstrap",
        Code={"ZipFile": zip_bytes(FILES)},
    )
    code = lam.get_function(FunctionName="located")["Code"]
    assert code["RepositoryType"] == "S3"
    location = code["Location"]
    assert location.startswith(server + "/ignis/code-download/"), location
    assert files_of(download(location)) == {name: (content, STORED_MODE[mode]) for name, content, mode in FILES}

    # A version's link is to its own code.
    lam.publish_version(FunctionName="located")
    lam.update_function_code(FunctionName="located", ZipFile=zip_bytes([("bootstrap", b"#!/bin/sh\n", 0o755)]))
    assert set(files_of(download(lam.get_function(FunctionName="located", Qualifier="1")["Code"]["Location"]))) == {
        "bootstrap",
        "lib/data.txt",
        "lib/deeper/tool",
    }
    assert set(files_of(download(lam.get_function(FunctionName="located")["Code"]["Location"]))) == {"bootstrap"}

    # Any change to the link is refused.
    base, signature = location.rsplit("=", 1)
    changed = "0" if signature[-1] != "0" else "1"
    assert refusal(base + "=" + signature[:-1] + changed) == (403, "AccessDeniedException")
    assert refusal(location.replace("X-Ignis-Expires=", "X-Ignis-Expires=9")) == (403, "AccessDeniedException")
    assert refusal(location.split("?")[0]) == (403, "AccessDeniedException")
