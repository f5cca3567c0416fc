"""Networks as Lambda's VpcConfig through boto3: the administrator makes a network with `ignis network create`; a
function names it in SubnetIds and SecurityGroupIds, GetFunctionConfiguration shows it, empty lists detach the
function; a subnet that is no network of the account is Lambda's InvalidParameterValueException."""

import os
import subprocess

import pytest
from botocore.exceptions import ClientError

from test_boto3 import BIN_DIR, KEY_ID, SECRET, client, server, shell_example  # noqa: F401 (server is a fixture)


@pytest.fixture(scope="module")
def lam(server):
    return client(server, "lambda")


def ignis(server, *args):
    env = dict(os.environ, IGNIS_ENDPOINT=server, IGNIS_ACCESS_KEY_ID=KEY_ID, IGNIS_SECRET_ACCESS_KEY=SECRET)
    return subprocess.run([str(BIN_DIR / "ignis"), *args], env=env, capture_output=True, text=True, timeout=60)


def create(lam, name, vpc):
    return lam.create_function(
        FunctionName=name,
        Runtime="provided.al2023",
        Role="r",
        Handler="x",
        Code={"ZipFile": shell_example()},
        VpcConfig=vpc,
    )


def test_vpc_config(server, lam):
    made = ignis(server, "network", "create", "sdk-db", "--allow", "10.40.0.0/16")
    assert made.returncode == 0, made.stderr

    with pytest.raises(ClientError) as error:
        create(lam, "vpc-unknown", {"SubnetIds": ["subnet-0abc"], "SecurityGroupIds": ["subnet-0abc"]})
    assert error.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "InvalidSubnetID.NotFound" in error.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as error:
        create(lam, "vpc-alone", {"SubnetIds": ["sdk-db"], "SecurityGroupIds": []})
    assert error.value.response["Error"]["Code"] == "InvalidParameterValueException"

    created = create(lam, "vpc-fn", {"SubnetIds": ["sdk-db"], "SecurityGroupIds": ["sdk-db"]})
    expected = {
        "SubnetIds": ["sdk-db"],
        "SecurityGroupIds": ["sdk-db"],
        "VpcId": "ignis",
        "Ipv6AllowedForDualStack": False,
    }
    assert created["VpcConfig"] == expected
    assert lam.get_function_configuration(FunctionName="vpc-fn")["VpcConfig"] == expected
    assert lam.get_function(FunctionName="vpc-fn")["Configuration"]["VpcConfig"] == expected

    in_use = ignis(server, "network", "delete", "sdk-db")
    assert in_use.returncode != 0 and "ResourceConflictException" in in_use.stderr

    empty = {"SubnetIds": [], "SecurityGroupIds": []}
    detached = lam.update_function_configuration(FunctionName="vpc-fn", VpcConfig=empty)
    assert detached.get("VpcConfig", {}).get("SubnetIds", []) == []
    assert lam.get_function_configuration(FunctionName="vpc-fn").get("VpcConfig", {}).get("SubnetIds", []) == []
    deleted = ignis(server, "network", "delete", "sdk-db")
    assert deleted.returncode == 0, deleted.stderr
