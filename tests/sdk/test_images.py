"""Container-image functions through boto3: an image pushed with skopeo to Ignis's registry
becomes a function (`PackageType="Image"`), and GetFunction reads back its image as Lambda
describes it (`Code.RepositoryType` ECR, `ImageUri`, `ResolvedImageUri`)."""

import gzip
import hashlib
import io
import json
import pathlib
import subprocess
import tarfile
import tempfile

import pytest
from botocore.exceptions import ClientError

from test_boto3 import KEY_ID, SECRET, client, server  # noqa: F401 (server is a fixture)


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_layout(layout, tag):
    """An OCI image layout with one linux/amd64 image tagged `tag`: one gzip layer holding
    `/hello`; answers the manifest's digest."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        body = b"#!/bin/sh\necho hello\n"
        info = tarfile.TarInfo("hello")
        info.size, info.mode = len(body), 0o755
        archive.addfile(info, io.BytesIO(body))
    layer = write_blob(layout, gzip.compress(tar.getvalue(), mtime=0))
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/hello"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()]},
    }
    config = dict(write_blob(layout, json.dumps(config).encode()), mediaType="application/vnd.oci.image.config.v1+json")
    manifest_type = "application/vnd.oci.image.manifest.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": [layer]}
    descriptor = dict(write_blob(layout, json.dumps(manifest).encode()), mediaType=manifest_type)
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    return descriptor["digest"]


def test_an_image_function_is_created_and_read_back(server, lam):
    host = server.removeprefix("http://")
    with tempfile.TemporaryDirectory() as tmp:
        layout = pathlib.Path(tmp) / "layout"
        digest = make_layout(layout, "v1")
        subprocess.run(
            ["skopeo", "--insecure-policy", "copy", f"oci:{layout}:v1", f"docker://{host}/sdk/app:v1",
             "--dest-tls-verify=false", "--dest-creds", f"{KEY_ID}:{SECRET}"],
            check=True, capture_output=True,
        )
    uri = f"{host}/sdk/app:v1"
    created = lam.create_function(
        FunctionName="sdk-image", Role="arn:aws:iam::123456789012:role/r", PackageType="Image",
        Code={"ImageUri": uri}, ImageConfig={"Command": ["serve"]},
    )
    assert created["PackageType"] == "Image"
    assert "Runtime" not in created and "Handler" not in created
    assert created["CodeSha256"] == digest.removeprefix("sha256:")
    got = lam.get_function(FunctionName="sdk-image")
    assert got["Code"] == {"RepositoryType": "ECR", "ImageUri": uri, "ResolvedImageUri": f"{host}/sdk/app@{digest}"}
    assert got["Configuration"]["ImageConfigResponse"] == {"ImageConfig": {"Command": ["serve"]}}

    with pytest.raises(ClientError) as error:
        lam.create_function(
            FunctionName="sdk-bad", Role="arn:aws:iam::123456789012:role/r", PackageType="Image",
            Code={"ImageUri": f"{host}/sdk/app:missing"},
        )
    assert error.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "does not exist" in error.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as error:
        lam.update_function_code(FunctionName="sdk-image", ZipFile=b"PK")
    assert error.value.response["Error"]["Code"] == "InvalidParameterValueException"
