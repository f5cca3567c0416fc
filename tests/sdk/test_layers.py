"""Lambda layers through boto3 and the AWS CLI: layer versions published, read, listed and
deleted; a function's `Layers` on CreateFunction and UpdateFunctionConfiguration, shown by
GetFunction and kept by a published version; and Lambda's refusals (six layers, a missing
version, another account's layer, code and layers over 250 MB unzipped)."""

import base64
import hashlib
import json
import os
import subprocess
import tempfile

import pytest
from botocore.exceptions import ClientError

from test_boto3 import KEY_ID, SECRET, client, server, shell_example, zip_bytes  # noqa: F401 (server is a fixture)


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


def layer_zip(text):
    return zip_bytes([("lib/" + text, text.encode(), 0o644), ("bin/tool", b"#!/bin/sh\n", 0o755)])


def publish(lam, name, text, **extra):
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": layer_zip(text)}, **extra)


def error_of(call):
    with pytest.raises(ClientError) as error:
        call()
    return error.value.response["Error"]["Code"], error.value.response["Error"]["Message"], error.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_layer_versions(lam):
    zip_file = layer_zip("one")
    first = lam.publish_layer_version(
        LayerName="boto-layer",
        Description="first",
        Content={"ZipFile": zip_file},
        CompatibleRuntimes=["provided.al2023", "python3.12"],
        CompatibleArchitectures=["x86_64"],
        LicenseInfo="MIT",
    )
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 201
    account = first["LayerArn"].split(":")[4]
    assert first["LayerArn"] == f"arn:aws:lambda:us-east-1:{account}:layer:boto-layer"
    assert first["LayerVersionArn"] == first["LayerArn"] + ":1" and first["Version"] == 1
    assert first["Content"]["CodeSha256"] == base64.b64encode(hashlib.sha256(zip_file).digest()).decode()
    assert first["Content"]["CodeSize"] == len(zip_file)
    assert (first["Description"], first["LicenseInfo"], first["CompatibleArchitectures"]) == ("first", "MIT", ["x86_64"])
    assert first["CompatibleRuntimes"] == ["provided.al2023", "python3.12"] and first["CreatedDate"]
    second = publish(lam, "boto-layer", "two", CompatibleRuntimes=["nodejs20.x"])
    assert second["Version"] == 2

    got = lam.get_layer_version(LayerName="boto-layer", VersionNumber=1)
    assert (got["LayerVersionArn"], got["Content"]["CodeSha256"]) == (first["LayerVersionArn"], first["Content"]["CodeSha256"])
    assert lam.get_layer_version(LayerName=first["LayerArn"], VersionNumber=2)["Version"] == 2
    assert lam.get_layer_version_by_arn(Arn=first["LayerVersionArn"])["Description"] == "first"

    versions = lam.list_layer_versions(LayerName="boto-layer")["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1]
    only = lam.list_layer_versions(LayerName="boto-layer", CompatibleRuntime="python3.12")["LayerVersions"]
    assert [v["Version"] for v in only] == [1]
    page = lam.list_layer_versions(LayerName="boto-layer", MaxItems=1)
    assert [v["Version"] for v in page["LayerVersions"]] == [2]
    assert [v["Version"] for v in lam.list_layer_versions(LayerName="boto-layer", Marker=page["NextMarker"])["LayerVersions"]] == [1]

    layers = {layer["LayerName"]: layer for layer in lam.list_layers()["Layers"]}
    assert layers["boto-layer"]["LatestMatchingVersion"]["Version"] == 2
    filtered = {layer["LayerName"]: layer for layer in lam.list_layers(CompatibleRuntime="python3.12")["Layers"]}
    assert filtered["boto-layer"]["LatestMatchingVersion"]["Version"] == 1

    # Deleted versions are gone, their numbers are not reused.
    lam.delete_layer_version(LayerName="boto-layer", VersionNumber=2)
    code, _, status = error_of(lambda: lam.get_layer_version(LayerName="boto-layer", VersionNumber=2))
    assert (code, status) == ("ResourceNotFoundException", 404)
    assert publish(lam, "boto-layer", "three")["Version"] == 3
    lam.delete_layer_version(LayerName="boto-layer", VersionNumber=2)

    code, _, status = error_of(lambda: publish(lam, "bad name", "x"))
    assert (code, status) == ("ValidationException", 400)
    code, message, _ = error_of(lambda: lam.publish_layer_version(LayerName="s3-layer", Content={"S3Bucket": "bucket", "S3Key": "key"}))
    assert code == "InvalidParameterValueException" and "S3" in message
    code, _, _ = error_of(lambda: lam.publish_layer_version(LayerName="bad-zip", Content={"ZipFile": zip_bytes([("../escape", b"x", 0o644)])}))
    assert code == "InvalidParameterValueException"


def test_function_layers(lam):
    one = publish(lam, "fn-layer-a", "a")["LayerVersionArn"]
    two = publish(lam, "fn-layer-b", "b")["LayerVersionArn"]
    created = lam.create_function(
        FunctionName="layered", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()}, Layers=[one, two]
    )
    sizes = {one: lam.get_layer_version_by_arn(Arn=one)["Content"]["CodeSize"], two: lam.get_layer_version_by_arn(Arn=two)["Content"]["CodeSize"]}
    assert created["Layers"] == [{"Arn": one, "CodeSize": sizes[one]}, {"Arn": two, "CodeSize": sizes[two]}]
    assert lam.get_function(FunctionName="layered")["Configuration"]["Layers"] == created["Layers"]
    assert [f.get("Layers") for f in lam.list_functions()["Functions"] if f["FunctionName"] == "layered"] == [created["Layers"]]

    # A published version keeps its layers; deleting a layer version breaks nothing that uses it.
    version = lam.publish_version(FunctionName="layered")
    assert version["Layers"] == created["Layers"]
    lam.delete_layer_version(LayerName="fn-layer-a", VersionNumber=1)
    assert lam.get_function(FunctionName="layered", Qualifier=version["Version"])["Configuration"]["Layers"] == created["Layers"]

    # Absent keeps them, a new list replaces them, an empty one removes them.
    updated = lam.update_function_configuration(FunctionName="layered", Description="same layers")
    assert updated["Layers"] == created["Layers"]
    updated = lam.update_function_configuration(FunctionName="layered", Layers=[two])
    assert updated["Layers"] == [{"Arn": two, "CodeSize": sizes[two]}]
    updated = lam.update_function_configuration(FunctionName="layered", Layers=[])
    assert "Layers" not in updated
    assert "Layers" not in lam.get_function_configuration(FunctionName="layered")


def test_function_layer_errors(lam):
    arns = [publish(lam, f"many-{n}", str(n))["LayerVersionArn"] for n in range(6)]
    create = lambda name, layers: lam.create_function(  # noqa: E731
        FunctionName=name, Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()}, Layers=layers
    )
    assert error_of(lambda: create("six", arns)) == ("InvalidParameterValueException", "Cannot reference more than 5 layers.", 400)
    account = arns[0].split(":")[4]
    missing = f"arn:aws:lambda:us-east-1:{account}:layer:many-0:9"
    assert error_of(lambda: create("missing", [missing])) == ("InvalidParameterValueException", f"Layer version {missing} does not exist.", 400)
    other = "arn:aws:lambda:us-east-1:999999999999:layer:theirs:1"
    code, message, _ = error_of(lambda: create("theirs", [other]))
    assert code == "InvalidParameterValueException" and "cross-account layer permissions are not supported" in message
    code, message, _ = error_of(lambda: create("twice", [arns[0], publish(lam, "many-0", "again")["LayerVersionArn"]]))
    assert code == "InvalidParameterValueException" and "same layer" in message
    assert error_of(lambda: create("bad-arn", ["not-an-arn"]))[0] == "ValidationException"
    for name in ("six", "missing", "theirs", "twice", "bad-arn"):
        assert error_of(lambda: lam.get_function(FunctionName=name))[0] == "ResourceNotFoundException"

    # Code and layers together over 250 MB unzipped: two layers of the same half.
    half = zip_bytes([("zeros", b"\0" * 131_072_001, 0o644)])
    big = [lam.publish_layer_version(LayerName=f"half-{n}", Content={"ZipFile": half})["LayerVersionArn"] for n in range(2)]
    code, message, _ = error_of(lambda: create("too-large", big))
    assert code == "InvalidParameterValueException"
    assert message.startswith("Function code combined with layers exceeds the maximum allowed size of 262144000 bytes.")
    lam.create_function(FunctionName="half", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()}, Layers=big[:1])
    code, _, _ = error_of(lambda: lam.update_function_configuration(FunctionName="half", Layers=big))
    assert code == "InvalidParameterValueException"


def test_layers_with_the_aws_cli(server, lam):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    with tempfile.NamedTemporaryFile(suffix=".zip") as archive:
        archive.write(layer_zip("cli"))
        archive.flush()
        published = subprocess.run(
            ["aws", "--endpoint-url", server, "lambda", "publish-layer-version", "--layer-name", "cli-layer", "--zip-file", f"fileb://{archive.name}",
             "--compatible-runtimes", "provided.al2023"],
            env=env, capture_output=True, text=True, check=True,
        )
    arn = json.loads(published.stdout)["LayerVersionArn"]
    assert arn.endswith(":layer:cli-layer:1")
    listed = subprocess.run(["aws", "--endpoint-url", server, "lambda", "list-layer-versions", "--layer-name", "cli-layer"], env=env, capture_output=True, text=True, check=True)
    assert [v["LayerVersionArn"] for v in json.loads(listed.stdout)["LayerVersions"]] == [arn]
    lam.create_function(FunctionName="cli-layered", Runtime="provided.al2023", Role="r", Handler="x", Code={"ZipFile": shell_example()})
    subprocess.run(["aws", "--endpoint-url", server, "lambda", "update-function-configuration", "--function-name", "cli-layered", "--layers", arn],
                   env=env, capture_output=True, text=True, check=True)
    assert [layer["Arn"] for layer in lam.get_function(FunctionName="cli-layered")["Configuration"]["Layers"]] == [arn]
