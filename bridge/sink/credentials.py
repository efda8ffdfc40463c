"""The AWS credentials of the AWS sinks: the default chain, or a role assumed on top of it.

One boto3 session holds them, and every AWS client of the sink is made from it (the boto3
``events`` client and the lean client's signer alike), so a refreshed credential serves both.
With ``aws.assume_role_arn`` the session's credentials come from botocore's own
``AssumeRoleCredentialFetcher`` (sts:AssumeRole with the default chain's credentials, the external
id, session name and duration) wrapped in ``DeferredRefreshableCredentials``: botocore renews
them before they expire, as it does for a role named in a profile.

:func:`resolve_credentials` gets them once at start, so that a deployment without credentials,
or a role STS refuses, stops the bridge with one line saying why (exit 2) instead of failing
every call. Messages name settings and ARNs, never a key, a token or the external id.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    CredentialResolver,
    Credentials,
    DeferredRefreshableCredentials,
)
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


class _AssumedRoleCredentials(DeferredRefreshableCredentials):
    """botocore's deferred credentials, with refresh windows that fit short sessions.

    botocore refreshes 15 minutes before expiry (10 minutes: blocking). With ``DurationSeconds``
    900, AWS's minimum, fresh credentials would always be inside that window and every request
    would call sts:AssumeRole first; the windows shrink to a third and a sixth of the duration.
    """

    def __init__(self, refresh_using: Any, duration_s: int) -> None:
        super().__init__(refresh_using=refresh_using, method="assume-role")
        self._advisory_refresh_timeout = min(15 * 60, duration_s // 3)
        self._mandatory_refresh_timeout = min(10 * 60, duration_s // 6)


class _AssumedRoleProvider(CredentialProvider):
    """The only provider of the sink's session when a role is assumed."""

    METHOD = "assume-role"
    CANONICAL_NAME = "bridge-assume-role"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def aws_session(aws: AwsConfig) -> boto3.session.Session:
    """The session every AWS client of the sink is made from (nothing is fetched yet).

    Raises:
        CredentialsError: ``aws.assume_role_arn`` is set and the default chain, whose
            credentials call sts:AssumeRole, has none.
    """
    # Here, not at the top: about 0.5 s of imports that only the AWS sinks need (the Alibaba
    # sink, `bridge check-config` and `bridge render` import this module without calling it).
    import boto3
    import botocore.session

    chain = botocore.session.Session()
    if aws.assume_role_arn is None:
        return boto3.session.Session(botocore_session=chain, region_name=aws.region)
    try:
        source = chain.get_credentials()
    except BotoCoreError as exc:
        raise CredentialsError(f"cannot read the default AWS credential chain: {exc}") from None
    if source is None:
        raise CredentialsError(NO_CREDENTIALS + " (needed to assume aws.assume_role_arn)")
    extra: dict[str, Any] = {
        "RoleSessionName": aws.role_session_name,
        "DurationSeconds": aws.role_duration_s,
    }
    if aws.external_id is not None:
        extra["ExternalId"] = aws.external_id
    sts_config = Config(
        connect_timeout=aws.connect_timeout_s,
        read_timeout=aws.read_timeout_s,
        retries={"mode": "standard"},
    )
    fetcher = AssumeRoleCredentialFetcher(
        # STS of the bridge's region; AWS_ENDPOINT_URL_STS (botocore's setting) points elsewhere.
        client_creator=functools.partial(
            chain.create_client, region_name=aws.region, config=sts_config
        ),
        source_credentials=source,
        role_arn=aws.assume_role_arn,
        extra_args=extra,
        expiry_window_seconds=min(15 * 60, aws.role_duration_s // 3),
    )
    assumed = _AssumedRoleCredentials(fetcher.fetch_credentials, aws.role_duration_s)
    session = botocore.session.Session()
    session.register_component(
        "credential_provider", CredentialResolver([_AssumedRoleProvider(assumed)])
    )
    return boto3.session.Session(botocore_session=session, region_name=aws.region)


def resolve_credentials(session: boto3.session.Session, aws: AwsConfig) -> Credentials:
    """The session's credentials, fetched now (an assumed role: sts:AssumeRole is called).

    Raises:
        CredentialsError: None in the default chain, or STS refused (exit 2).
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
    if exc.operation_name == "AssumeRole" and aws.assume_role_arn is not None:
        hint = (
            f"check aws.assume_role_arn ({aws.assume_role_arn}): its trust policy must allow"
            " sts:AssumeRole by the default chain's identity"
        )
        if aws.external_id is not None:
            hint += " with the ExternalId set in aws.external_id"
        elif code == "AccessDenied":
            hint += " (if it requires an ExternalId, set aws.external_id)"
        return f"STS refused to assume aws.assume_role_arn: {code}: {message}; {hint}"
    return (
        f"AWS refused the credentials of the default chain ({exc.operation_name}):"
        f" {code}: {message}"
    )
