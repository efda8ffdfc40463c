"""The AWS credentials of the AWS sinks: the default chain.

One boto3 session holds them, and every AWS client of the sink is made from it (the boto3
``events`` client and the lean client's signer alike), so a refreshed credential serves both.

:func:`resolve_credentials` gets them once at start, so that a deployment without credentials
stops the bridge with one line saying why (exit 2) instead of failing every call. Messages
never hold a key or a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.credentials import Credentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from bridge.errors import BridgeError, CredentialsError

if TYPE_CHECKING:
    import boto3

    from bridge.config import AwsConfig

NO_CREDENTIALS = (
    "no AWS credentials found. The default chain looks, in order, at: the environment"
    " (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, plus AWS_SESSION_TOKEN for temporary keys);"
    " a shared profile (AWS_PROFILE, else 'default', in ~/.aws/credentials and ~/.aws/config);"
    " web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, as EKS IRSA sets them);"
    " container credentials (ECS, EKS Pod Identity); EC2 instance metadata"
)

_TRANSPORT_ERRORS = (BotoConnectionError, HTTPClientError)


def aws_session(aws: AwsConfig) -> boto3.session.Session:
    """The session every AWS client of the sink is made from (nothing is fetched yet)."""
    import boto3
    import botocore.session

    chain = botocore.session.Session()
    return boto3.session.Session(botocore_session=chain, region_name=aws.region)


def resolve_credentials(session: boto3.session.Session, aws: AwsConfig) -> Credentials:
    """The session's credentials, fetched now (web identity: STS is called).

    Raises:
        CredentialsError: None in the default chain, or STS refused them (exit 2).
        BridgeError: STS could not be reached (exit 1: a restart may do).
    """
    try:
        credentials = session.get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        credentials.get_frozen_credentials()
    except NoCredentialsError:
        raise CredentialsError(NO_CREDENTIALS) from None
    except ClientError as exc:
        raise CredentialsError(_refused(exc, aws)) from None
    except _TRANSPORT_ERRORS as exc:
        raise BridgeError(f"cannot reach AWS STS to get credentials: {exc}") from None
    except BotoCoreError as exc:
        raise CredentialsError(f"cannot get AWS credentials: {exc}") from None
    return credentials


def _refused(exc: ClientError, aws: AwsConfig) -> str:
    error = exc.response.get("Error", {})
    code = error.get("Code") or "ClientError"
    message = error.get("Message") or ""
    return (
        f"AWS refused the credentials of the default chain ({exc.operation_name}):"
        f" {code}: {message}"
    )
