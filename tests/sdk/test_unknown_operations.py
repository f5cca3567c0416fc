"""A Lambda operation Ignis does not serve answers Lambda's `UnknownOperationException` (404)
naming the operation, which boto3 raises as that error code; a request that is no operation
names its method and path."""

import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from test_boto3 import client, server  # noqa: F401 (server is a fixture)


def test_unknown_operations_are_named(server):
    lam = client(server, "lambda")
    with pytest.raises(ClientError) as error:
        lam.list_code_signing_configs()
    response = error.value.response
    assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) == ("UnknownOperationException", 404)
    assert "ListCodeSigningConfigs" in response["Error"]["Message"], response["Error"]["Message"]

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(urllib.request.Request(server + "/no/such/thing", method="PATCH"), timeout=30)
    assert (error.value.code, error.value.headers["x-amzn-ErrorType"]) == (404, "UnknownOperationException")
    assert "PATCH /no/such/thing" in error.value.read().decode()
