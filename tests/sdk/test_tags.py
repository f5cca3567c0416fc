"""A function's tags through boto3: `Tags` on CreateFunction, TagResource, UntagResource and
ListTags by the function's ARN, GetFunction's `Tags`; Lambda's limits and refusals (a version's
or alias's ARN, another resource type, keys of AWS's prefix, too many or too long tags); tags go
with the function when it is deleted."""

import pytest
from botocore.exceptions import ClientError

from test_boto3 import client, server, shell_example  # noqa: F401 (server is a fixture)


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


def create(lam, name, **extra):
    return lam.create_function(
        FunctionName=name,
        Runtime="provided.al2023",
        Role="arn:aws:iam::123456789012:role/ignis",
        Handler="handler.handler",
        Code={"ZipFile": shell_example()},
        **extra,
    )


def error_of(call):
    with pytest.raises(ClientError) as error:
        call()
    response = error.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_tags_of_a_function(lam):
    arn = create(lam, "tagged", Tags={"team": "blue", "cost center": "42"})["FunctionArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "blue", "cost center": "42"}
    assert lam.get_function(FunctionName="tagged")["Tags"] == {"team": "blue", "cost center": "42"}

    revision = lam.get_function_configuration(FunctionName="tagged")["RevisionId"]
    lam.tag_resource(Resource=arn, Tags={"team": "red", "stage": ""})
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "red", "cost center": "42", "stage": ""}
    # Tagging is not a change of the function's code or configuration.
    assert lam.get_function_configuration(FunctionName="tagged")["RevisionId"] == revision

    lam.untag_resource(Resource=arn, TagKeys=["cost center", "never-set"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "red", "stage": ""}

    # A version has the function's tags; it cannot be tagged itself.
    version = lam.publish_version(FunctionName="tagged")
    assert lam.get_function(FunctionName="tagged", Qualifier=version["Version"])["Tags"] == {"team": "red", "stage": ""}
    assert error_of(lambda: lam.tag_resource(Resource=version["FunctionArn"], Tags={"a": "b"})) == ("InvalidParameterValueException", 400)
    assert error_of(lambda: lam.list_tags(Resource=arn + ":$LATEST")) == ("InvalidParameterValueException", 400)

    # Without tags, GetFunction has none and ListTags an empty map.
    plain = create(lam, "untagged")["FunctionArn"]
    assert "Tags" not in lam.get_function(FunctionName="untagged")
    assert lam.list_tags(Resource=plain)["Tags"] == {}

    # The tags go with the function.
    lam.delete_function(FunctionName="tagged")
    assert error_of(lambda: lam.list_tags(Resource=arn)) == ("ResourceNotFoundException", 404)
    assert create(lam, "tagged")["FunctionArn"] == arn
    assert lam.list_tags(Resource=arn)["Tags"] == {}


def test_limits_and_refusals(lam):
    arn = create(lam, "limits")["FunctionArn"]
    account = arn.split(":")[4]
    lam.tag_resource(Resource=arn, Tags={f"k{i}": "v" for i in range(50)})
    assert len(lam.list_tags(Resource=arn)["Tags"]) == 50
    # One more is over Lambda's 50; setting one again is not.
    assert error_of(lambda: lam.tag_resource(Resource=arn, Tags={"k50": "v"})) == ("InvalidParameterValueException", 400)
    lam.tag_resource(Resource=arn, Tags={"k0": "again"})
    assert len(lam.list_tags(Resource=arn)["Tags"]) == 50
    lam.untag_resource(Resource=arn, TagKeys=[f"k{i}" for i in range(50)])
    assert lam.list_tags(Resource=arn)["Tags"] == {}

    lam.tag_resource(Resource=arn, Tags={"k" * 128: "v" * 256})
    for tags in [{"k" * 129: "v"}, {"k": "v" * 257}, {"": "v"}, {"bad!": "v"}]:
        assert error_of(lambda: lam.tag_resource(Resource=arn, Tags=tags)) == ("ValidationException", 400), tags
    for tags in [{"aws:owner": "x"}, {"AWS:x": "y"}]:
        assert error_of(lambda: lam.tag_resource(Resource=arn, Tags=tags)) == ("InvalidParameterValueException", 400)
    assert error_of(lambda: lam.untag_resource(Resource=arn, TagKeys=["aws:owner"])) == ("InvalidParameterValueException", 400)
    too_many = {f"k{i}": "" for i in range(51)}
    assert error_of(lambda: create(lam, "limits-2", Tags=too_many)) == ("InvalidParameterValueException", 400)
    assert error_of(lambda: create(lam, "limits-2", Tags={"aws:x": ""})) == ("InvalidParameterValueException", 400)
    assert error_of(lambda: lam.get_function(FunctionName="limits-2")) == ("ResourceNotFoundException", 404)
    # A refused request changed nothing.
    assert lam.list_tags(Resource=arn)["Tags"] == {"k" * 128: "v" * 256}

    # Other resources: a missing function, another account's, other resource types, not an ARN.
    missing = arn.replace(":limits", ":nothing")
    assert error_of(lambda: lam.list_tags(Resource=missing)) == ("ResourceNotFoundException", 404)
    other = arn.replace(account, "999999999999")
    assert error_of(lambda: lam.tag_resource(Resource=other, Tags={"a": "b"})) == ("AccessDeniedException", 403)
    mapping = f"arn:aws:lambda:us-east-1:{account}:event-source-mapping:14e0db71-5d35-4eb5-b481-8945cf9d10c2"
    assert error_of(lambda: lam.list_tags(Resource=mapping)) == ("InvalidParameterValueException", 400)
    assert error_of(lambda: lam.list_tags(Resource=f"arn:aws:sqs:us-east-1:{account}:q")) == ("ValidationException", 400)
