"""Resource-based policies through boto3: AddPermission / GetPolicy / RemovePermission on a function, a version
and an alias, Lambda's errors, and another account's invocations allowed by a statement and refused without."""

import json

import pytest
from botocore.exceptions import ClientError

from test_boto3 import ignis_accounts, server, shell_example  # noqa: F401 (server is a fixture)
from test_credentials import client_for

RUNTIME = {"Runtime": "provided.al2023", "Role": "arn:aws:iam::123456789012:role/r", "Handler": "bootstrap"}


def tenant(server, name):
    status, account = ignis_accounts(server, "POST", {"Name": name})
    assert status == 201, account
    return account, client_for(server, "lambda", account["AccessKeyId"], account["SecretAccessKey"])


def error_of(call):
    with pytest.raises(ClientError) as error:
        call()
    return error.value.response["Error"]["Code"], error.value.response["Error"]["Message"]


def test_add_get_remove_and_errors(server):
    owner, lam = tenant(server, "policy-owner")
    arn = lam.create_function(FunctionName="pf", Code={"ZipFile": shell_example()}, **RUNTIME)["FunctionArn"]
    assert error_of(lambda: lam.get_policy(FunctionName="pf")) == (
        "ResourceNotFoundException", "The resource you requested does not exist.")

    added = lam.add_permission(
        FunctionName="pf", StatementId="from-beta", Action="lambda:InvokeFunction", Principal="222222222222")
    assert json.loads(added["Statement"]) == {
        "Sid": "from-beta", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
        "Action": "lambda:InvokeFunction", "Resource": arn}
    lam.add_permission(
        FunctionName="pf", StatementId="from-s3", Action="lambda:InvokeFunction", Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::bucket", SourceAccount=owner["AccountId"])
    got = lam.get_policy(FunctionName="pf")
    policy = json.loads(got["Policy"])
    assert (policy["Version"], policy["Id"]) == ("2012-10-17", "default")
    assert [s["Sid"] for s in policy["Statement"]] == ["from-beta", "from-s3"]
    assert policy["Statement"][1]["Principal"] == {"Service": "s3.amazonaws.com"}
    assert policy["Statement"][1]["Condition"] == {
        "StringEquals": {"AWS:SourceAccount": owner["AccountId"]}, "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::bucket"}}
    revision = got["RevisionId"]

    # Errors, as Lambda types them.
    assert error_of(lambda: lam.add_permission(
        FunctionName="pf", StatementId="from-beta", Action="lambda:InvokeFunction", Principal="*"))[0] == "ResourceConflictException"
    code, message = error_of(lambda: lam.add_permission(
        FunctionName="pf", StatementId="bad", Action="lambda:InvokeFunction", Principal="bob"))
    assert (code, message) == ("InvalidParameterValueException",
                               "The provided principal was invalid. Please check the principal and try again.")
    assert error_of(lambda: lam.add_permission(
        FunctionName="pf", StatementId="stale", Action="lambda:InvokeFunction", Principal="*", RevisionId="stale"))[0] == "PreconditionFailedException"
    assert error_of(lambda: lam.add_permission(
        FunctionName="pf", Qualifier="$LATEST", StatementId="l", Action="lambda:InvokeFunction", Principal="*")) == (
        "InvalidParameterValueException", "We currently do not support adding policies for $LATEST.")
    assert error_of(lambda: lam.remove_permission(FunctionName="pf", StatementId="nothing")) == (
        "ResourceNotFoundException", "Statement nothing is not found in resource policy.")
    assert error_of(lambda: lam.remove_permission(FunctionName="pf", StatementId="from-s3", RevisionId="stale"))[0] == "PreconditionFailedException"
    assert error_of(lambda: lam.get_policy(FunctionName="nothing"))[0] == "ResourceNotFoundException"
    assert error_of(lambda: lam.add_permission(
        FunctionName="pf", StatementId="big", Action="lambda:InvokeFunction", Principal="*",
        SourceArn="arn:aws:s3:::" + "b" * 21000))[0] == "PolicyLengthExceededException"

    # Removing with the current revision; the last statement's removal removes the policy.
    lam.remove_permission(FunctionName="pf", StatementId="from-s3", RevisionId=revision)
    assert [s["Sid"] for s in json.loads(lam.get_policy(FunctionName="pf")["Policy"])["Statement"]] == ["from-beta"]
    lam.remove_permission(FunctionName="pf", StatementId="from-beta")
    assert error_of(lambda: lam.get_policy(FunctionName="pf"))[0] == "ResourceNotFoundException"

    # A version and an alias each have their own policy; publishing copies none.
    lam.add_permission(FunctionName="pf", StatementId="fn", Action="lambda:InvokeFunction", Principal="*")
    version = lam.publish_version(FunctionName="pf")["Version"]
    assert error_of(lambda: lam.get_policy(FunctionName="pf", Qualifier=version))[0] == "ResourceNotFoundException"
    lam.create_alias(FunctionName="pf", Name="live", FunctionVersion=version)
    lam.add_permission(FunctionName="pf:live", StatementId="alias", Action="lambda:InvokeFunction", Principal="*")
    alias_policy = json.loads(lam.get_policy(FunctionName="pf", Qualifier="live")["Policy"])
    assert [(s["Sid"], s["Resource"]) for s in alias_policy["Statement"]] == [("alias", arn + ":live")]
    assert [s["Sid"] for s in json.loads(lam.get_policy(FunctionName="pf")["Policy"])["Statement"]] == ["fn"]
    # Deleting the alias deletes its policy.
    lam.delete_alias(FunctionName="pf", Name="live")
    lam.create_alias(FunctionName="pf", Name="live", FunctionVersion=version)
    assert error_of(lambda: lam.get_policy(FunctionName="pf", Qualifier="live"))[0] == "ResourceNotFoundException"


def test_cross_account_invoke_follows_the_policy(server):
    owner, lam = tenant(server, "policy-xowner")
    caller, other = tenant(server, "policy-xcaller")
    arn = lam.create_function(FunctionName="shared", Code={"ZipFile": shell_example()}, **RUNTIME)["FunctionArn"]

    def denied():
        code, message = error_of(lambda: other.invoke(FunctionName=arn))
        assert code == "AccessDeniedException"
        assert message.startswith(
            f"User: arn:aws:iam::{caller['AccountId']}:root is not authorized to perform: lambda:InvokeFunction on resource: {arn}")
        assert error_of(lambda: other.invoke(FunctionName=arn, InvocationType="Event"))[0] == "AccessDeniedException"

    denied()
    # A statement for another account, or for another action, does not help.
    lam.add_permission(FunctionName="shared", StatementId="someone", Action="lambda:InvokeFunction", Principal="333333333333")
    lam.add_permission(FunctionName="shared", StatementId="read", Action="lambda:GetFunction", Principal=caller["AccountId"])
    denied()

    lam.add_permission(FunctionName="shared", StatementId="caller", Action="lambda:InvokeFunction", Principal=caller["AccountId"])
    answer = other.invoke(FunctionName=arn)
    assert answer["StatusCode"] == 200 and "FunctionError" not in answer, answer
    assert other.invoke(FunctionName=arn, InvocationType="Event")["StatusCode"] == 202
    # By name, the caller still has no such function of its own.
    assert error_of(lambda: other.invoke(FunctionName="shared"))[0] == "ResourceNotFoundException"
    # The unqualified policy does not reach an alias, which has its own.
    version = lam.publish_version(FunctionName="shared")["Version"]
    lam.create_alias(FunctionName="shared", Name="live", FunctionVersion=version)
    assert error_of(lambda: other.invoke(FunctionName=arn + ":live"))[0] == "AccessDeniedException"
    lam.add_permission(FunctionName="shared", Qualifier="live", StatementId="caller", Action="lambda:*",
                       Principal=f"arn:aws:iam::{caller['AccountId']}:root")
    assert other.invoke(FunctionName=arn + ":live")["StatusCode"] == 200
    assert error_of(lambda: other.invoke(FunctionName=arn + ":" + version))[0] == "AccessDeniedException"

    lam.remove_permission(FunctionName="shared", StatementId="caller")
    denied()
    assert other.invoke(FunctionName=arn + ":live")["StatusCode"] == 200


def test_a_destination_of_another_account_needs_a_statement(server):
    owner, lam = tenant(server, "policy-dest-owner")
    source, other = tenant(server, "policy-dest-source")
    sink = lam.create_function(FunctionName="sink", Code={"ZipFile": shell_example()}, **RUNTIME)["FunctionArn"]
    other.create_function(FunctionName="src", Code={"ZipFile": shell_example()}, **RUNTIME)
    config = {"OnSuccess": {"Destination": sink}}
    assert error_of(lambda: other.put_function_event_invoke_config(
        FunctionName="src", DestinationConfig=config))[0] == "InvalidParameterValueException"
    lam.add_permission(FunctionName="sink", StatementId="src", Action="lambda:InvokeFunction", Principal=source["AccountId"])
    put = other.put_function_event_invoke_config(FunctionName="src", DestinationConfig=config)
    assert put["DestinationConfig"]["OnSuccess"]["Destination"] == sink
