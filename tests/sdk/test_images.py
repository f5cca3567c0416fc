"""Container-image functions through boto3: an image pushed with skopeo to Ignis's registry
becomes a function (`PackageType="Image"`), GetFunction reads back its image as Lambda
describes it (`Code.RepositoryType` ECR, `ImageUri`, `ResolvedImageUri`), and an image of the
hello-rust example (the program and the libraries `ldd` lists, nothing else) answers Invoke."""

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

from test_boto3 import BIN_DIR, KEY_ID, SECRET, client, server  # noqa: F401 (server is a fixture)


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def tar_of(files):
    """A tar archive of `files` (path, content, mode) and the directories above them, owned by root, every
    mtime 0: the same files always give the same bytes."""
    dirs = sorted({str(parent) for path, _, _ in files for parent in pathlib.PurePosixPath(path).parents} - {"."})
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for path in dirs:
            info = tarfile.TarInfo(path)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for path, body, mode in files:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(body), mode
            archive.addfile(info, io.BytesIO(body))
    return tar.getvalue()


def write_layout(layout, tag, layers, run_config):
    """An OCI image layout with one linux/amd64 image tagged `tag`: `layers` (tar archives, stored gzipped) and
    `run_config` as its config's `config`; answers the manifest's digest."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descriptors = []
    for tar in layers:
        layer = write_blob(layout, gzip.compress(tar, mtime=0))
        layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        descriptors.append(layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest() for tar in layers]},
    }
    config = dict(write_blob(layout, json.dumps(config).encode()), mediaType="application/vnd.oci.image.config.v1+json")
    manifest_type = "application/vnd.oci.image.manifest.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": descriptors}
    descriptor = dict(write_blob(layout, json.dumps(manifest).encode()), mediaType=manifest_type)
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    return descriptor["digest"]


def make_layout(layout, tag):
    """An image of one file, `/hello`; answers the manifest's digest."""
    hello = tar_of([("hello", b"#!/bin/sh\necho hello\n", 0o755)])
    return write_layout(layout, tag, [hello], {"Entrypoint": ["/hello"], "WorkingDir": "/"})


def libraries(binary):
    """The files `binary` needs to run, as `ldd` lists them (libraries and loader): (path, content, mode)."""
    listed = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    paths = [line.split("=>")[-1].split()[0] for line in listed.splitlines() if line.split("=>")[-1].split()]
    return [(path.lstrip("/"), pathlib.Path(path).read_bytes(), 0o755) for path in paths if path.startswith("/")]


def make_hello_layout(layout, tag):
    """The hello-rust example as an image: a layer of the libraries it links and one with the program at
    `/var/task/bootstrap`, its entry point; answers the manifest's digest."""
    binary = BIN_DIR / "bootstrap"
    app = tar_of([("var/task/bootstrap", binary.read_bytes(), 0o755)])
    config = {"Entrypoint": ["/var/task/bootstrap"], "WorkingDir": "/var/task"}
    return write_layout(layout, tag, [tar_of(libraries(binary)), app], config)


def push(server, layout, tag, target):
    """Pushes image `tag` of `layout` to `target` of the server's registry with skopeo."""
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", f"oci:{layout}:{tag}",
         f"docker://{server.removeprefix('http://')}/{target}",
         "--dest-tls-verify=false", "--dest-creds", f"{KEY_ID}:{SECRET}"],
        check=True, capture_output=True,
    )


def test_an_image_function_is_created_and_read_back(server, lam):
    host = server.removeprefix("http://")
    with tempfile.TemporaryDirectory() as tmp:
        layout = pathlib.Path(tmp) / "layout"
        digest = make_layout(layout, "v1")
        push(server, layout, "v1", "sdk/app:v1")
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


def test_an_image_pushed_with_skopeo_runs_as_a_function_created_with_boto3(server, lam):
    host = server.removeprefix("http://")
    with tempfile.TemporaryDirectory() as tmp:
        layout = pathlib.Path(tmp) / "layout"
        digest = make_hello_layout(layout, "v1")
        push(server, layout, "v1", "sdk/hello:v1")
    created = lam.create_function(
        FunctionName="sdk-hello-image", Role="arn:aws:iam::123456789012:role/r", PackageType="Image",
        Code={"ImageUri": f"{host}/sdk/hello:v1"}, Timeout=30,
    )
    assert created["CodeSha256"] == digest.removeprefix("sha256:")
    lam.get_waiter("function_active_v2").wait(FunctionName="sdk-hello-image")
    reply = lam.invoke(FunctionName="sdk-hello-image", Payload=json.dumps({"name": "boto3"}))
    assert reply["StatusCode"] == 200
    assert "FunctionError" not in reply, reply["Payload"].read()
    assert json.loads(reply["Payload"].read()) == {"message": "Hello, boto3!"}
