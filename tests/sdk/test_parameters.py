"""No parameter is accepted and then dropped: every member of Lambda's CreateFunction and
UpdateFunctionConfiguration requests (as botocore's model of the API has them, so a member added to
the model fails these tests until it is listed) is sent through boto3, and each is either shown by
GetFunctionConfiguration / GetFunction as given, or refused with a typed error and changes nothing."""

import pytest
from botocore.exceptions import ClientError

from test_boto3 import client, server, shell_example, zip_bytes  # noqa: F401 (server is a fixture)

ROLE = "arn:aws:iam::123456789012:role/ignis"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
FILE_SYSTEM = [{"Arn": "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef0", "LocalMountPath": "/mnt/efs"}]
CAPACITY = {"LambdaManagedInstancesCapacityProviderConfig": {"CapacityProviderArn": "arn:aws:lambda:us-east-1:123456789012:capacity-provider:cp"}}
REFUSED = "InvalidParameterValueException"
INVALID = "ValidationException"


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


@pytest.fixture(scope="module")
def env(server, lam):
    """What the cases refer to: the account, and a queue for dead letters."""
    sqs = client(server, "sqs")
    url = sqs.create_queue(QueueName="parameters-dlq")["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"account": queue.split(":")[4], "queue": queue}


def config_has(path, expected):
    """A check that GetFunctionConfiguration shows `expected` at `path` (keys, then the value)."""

    def check(lam, name):
        value = lam.get_function_configuration(FunctionName=name)
        for key in path:
            value = value[key]
        assert value == expected, (path, value)

    return check


def config_lacks(key):
    def check(lam, name):
        config = lam.get_function_configuration(FunctionName=name)
        assert not config.get(key), (key, config.get(key))

    return check


def versions_are(expected):
    def check(lam, name):
        assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == expected

    return check


def function_has(key, expected):
    """A check on GetFunction's answer (for what is not configuration)."""

    def check(lam, name):
        assert lam.get_function(FunctionName=name)[key] == expected

    return check


def shared_cases(env):
    """The members CreateFunction and UpdateFunctionConfiguration share: each a list of (value, check or error)."""
    layer = f"arn:aws:lambda:us-east-1:{env['account']}:layer:absent:1"
    return {
        "Role": [("arn:aws:iam::123456789012:role/other", config_has(["Role"], "arn:aws:iam::123456789012:role/other"))],
        "Handler": [("main.handle", config_has(["Handler"], "main.handle")), ("has space", INVALID)],
        "Description": [("described", config_has(["Description"], "described")), ("x" * 257, INVALID)],
        "Timeout": [(7, config_has(["Timeout"], 7)), (901, INVALID)],
        "MemorySize": [(256, config_has(["MemorySize"], 256)), (10241, INVALID)],
        "VpcConfig": [
            ({"SubnetIds": [], "SecurityGroupIds": []}, config_lacks("VpcConfig")),
            ({"SubnetIds": ["no-such-network"], "SecurityGroupIds": ["no-such-network"]}, REFUSED),
        ],
        "Environment": [({"Variables": {"GREETING": "hi"}}, config_has(["Environment", "Variables"], {"GREETING": "hi"})), ({"Variables": {"AWS_REGION": "x"}}, REFUSED)],
        "Runtime": [("provided.al2", config_has(["Runtime"], "provided.al2")), ("cobol", INVALID), ("python3.12", REFUSED)],
        "DeadLetterConfig": [({"TargetArn": env["queue"]}, config_has(["DeadLetterConfig", "TargetArn"], env["queue"]))],
        "KMSKeyArn": [("", config_lacks("KMSKeyArn")), (KMS_KEY, REFUSED)],
        "TracingConfig": [({"Mode": "PassThrough"}, config_has(["TracingConfig", "Mode"], "PassThrough")), ({"Mode": "Active"}, REFUSED), ({"Mode": "On"}, INVALID)],
        "Layers": [([], config_lacks("Layers")), ([layer], REFUSED), (["not-an-arn"], INVALID)],
        "FileSystemConfigs": [([], config_lacks("FileSystemConfigs")), (FILE_SYSTEM, REFUSED)],
        "ImageConfig": [({"Command": ["x"]}, REFUSED)],
        "EphemeralStorage": [({"Size": 1024}, config_has(["EphemeralStorage", "Size"], 1024)), ({"Size": 10241}, INVALID)],
        "SnapStart": [({"ApplyOn": "None"}, config_has(["SnapStart", "ApplyOn"], "None")), ({"ApplyOn": "PublishedVersions"}, REFUSED)],
        "LoggingConfig": [({"LogGroup": "/custom/parameters"}, config_has(["LoggingConfig", "LogGroup"], "/custom/parameters"))],
        "CapacityProviderConfig": [(CAPACITY, REFUSED)],
        "DurableConfig": [({"RetentionPeriodInDays": 7}, REFUSED)],
    }


def create_cases(env):
    code = {"ZipFile": shell_example()}
    return {
        **shared_cases(env),
        "FunctionName": [(None, config_has(["FunctionName"], None)), ("bad name", INVALID)],
        "Code": [
            (code, config_has(["CodeSize"], len(code["ZipFile"]))),
            ({"S3Bucket": "bucket", "S3Key": "key"}, REFUSED),
            ({**code, "S3ObjectVersion": "1"}, REFUSED),
            ({**code, "SourceKMSKeyArn": KMS_KEY}, REFUSED),
            ({**code, "ImageUri": "localhost/app:1"}, REFUSED),
        ],
        "Publish": [(True, versions_are(["$LATEST", "1"]))],
        "PackageType": [("Zip", config_has(["PackageType"], "Zip")), ("Tarball", INVALID)],
        "Tags": [({"team": "blue"}, function_has("Tags", {"team": "blue"})), ({"aws:x": "y"}, REFUSED)],
        "Architectures": [(["x86_64"], config_has(["Architectures"], ["x86_64"])), (["arm64"], REFUSED)],
        "CodeSigningConfigArn": [("arn:aws:lambda:us-east-1:123456789012:code-signing-config:csc-0123456789abcdef0", REFUSED)],
        "PublishTo": [("LATEST_PUBLISHED", REFUSED)],
        "TenancyConfig": [({"TenantIsolationMode": "PER_TENANT"}, REFUSED)],
    }


def members(lam, operation):
    return set(lam.meta.service_model.operation_model(operation).input_shape.members)


def error_code(call):
    with pytest.raises(ClientError) as error:
        call()
    return error.value.response["Error"]["Code"]


def test_every_create_function_member(lam, env):
    model = members(lam, "CreateFunction")
    cases = create_cases(env)
    assert model <= set(cases), model - set(cases)
    # Members newer than the installed botocore cannot be sent.
    cases = {member: values for member, values in cases.items() if member in model}
    base = {"Runtime": "provided.al2023", "Role": ROLE, "Handler": "bootstrap", "Code": {"ZipFile": shell_example()}}
    for number, (member, values) in enumerate(sorted(cases.items())):
        for index, (value, expected) in enumerate(values):
            name = f"param-{number}-{index}"
            request = {**base, "FunctionName": name}
            if member == "FunctionName":
                if value is None:
                    expected = config_has(["FunctionName"], name)
                else:
                    request["FunctionName"] = value
            else:
                request[member] = value
            if isinstance(expected, str):
                assert error_code(lambda: lam.create_function(**request)) == expected, (member, value)
                assert error_code(lambda: lam.get_function(FunctionName=name)) == "ResourceNotFoundException", (member, value)
            else:
                lam.create_function(**request)
                expected(lam, name)
                lam.delete_function(FunctionName=name)


def test_every_update_function_configuration_member(lam, env):
    model = members(lam, "UpdateFunctionConfiguration") - {"FunctionName"}
    cases = {**shared_cases(env), "RevisionId": [("not-the-revision", "PreconditionFailedException")]}
    assert model <= set(cases), model - set(cases)
    cases = {member: values for member, values in cases.items() if member in model}
    lam.create_function(FunctionName="param-update", Runtime="provided.al2023", Role=ROLE, Handler="bootstrap", Code={"ZipFile": shell_example()})
    for member, values in sorted(cases.items()):
        for value, expected in values:
            before = lam.get_function_configuration(FunctionName="param-update")
            if isinstance(expected, str):
                call = lambda: lam.update_function_configuration(FunctionName="param-update", **{member: value})  # noqa: E731
                assert error_code(call) == expected, (member, value)
                assert lam.get_function_configuration(FunctionName="param-update")["RevisionId"] == before["RevisionId"], member
            else:
                lam.update_function_configuration(FunctionName="param-update", **{member: value})
                expected(lam, "param-update")
    # The right revision is honoured.
    revision = lam.get_function_configuration(FunctionName="param-update")["RevisionId"]
    lam.update_function_configuration(FunctionName="param-update", RevisionId=revision, Description="by revision")
    assert lam.get_function_configuration(FunctionName="param-update")["Description"] == "by revision"


def test_update_function_code_members(lam):
    lam.create_function(FunctionName="param-code", Runtime="provided.al2023", Role=ROLE, Handler="bootstrap", Code={"ZipFile": shell_example()})
    zip_file = zip_bytes([("bootstrap", b"#!/bin/sh\n", 0o755)])
    model = members(lam, "UpdateFunctionCode")
    for extra in [{"SourceKMSKeyArn": KMS_KEY}, {"S3ObjectVersion": "1"}, {"PublishTo": "LATEST_PUBLISHED"}]:
        if not set(extra) <= model:
            continue
        assert error_code(lambda: lam.update_function_code(FunctionName="param-code", ZipFile=zip_file, **extra)) == REFUSED, extra
    assert lam.update_function_code(FunctionName="param-code", ZipFile=zip_file, SourceKMSKeyArn="")["CodeSize"] == len(zip_file)
