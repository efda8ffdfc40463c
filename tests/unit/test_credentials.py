"""AWS credentials of the sinks: refresh windows of an assumed role, and what a call whose
credentials are gone (or cannot be refreshed) becomes: held, never dead-lettered.

No network: signing fails before anything is sent.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.credentials import CredentialResolver
from botocore.exceptions import ClientError, NoCredentialsError

from bridge.config.load import config_from_dict
from bridge.errors import ConfigError
from bridge.sink.credentials import _AssumedRoleCredentials, _AssumedRoleProvider
from bridge.sink.eventbridge import EventBridgeSink
from bridge.sink.lean import LeanEventsClient
from bridge.sink.outcome import Kind

ENTRY = {"Source": "com.example", "DetailType": "T", "Detail": "{}"}
UNREACHABLE = "http://127.0.0.1:9"  # never reached: signing fails first


def role_credentials(duration_s: int, calls: list[int]) -> Callable[[], dict[str, str]]:
    def fetch() -> dict[str, str]:
        calls.append(1)
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=duration_s)
        return {
            "access_key": f"ASIA{len(calls):016d}",
            "secret_key": "s",
            "token": "t",
            "expiry_time": expiry.isoformat(),
        }

    return fetch


@pytest.mark.parametrize("duration_s", [900, 3600, 43200])
def test_an_assumed_role_is_fetched_once_while_fresh(duration_s: int) -> None:
    """With botocore's windows (15/10 min) a 900 s session would call STS on every request."""
    calls: list[int] = []
    credentials = _AssumedRoleCredentials(role_credentials(duration_s, calls), duration_s)
    for _ in range(20):
        credentials.get_frozen_credentials()
    assert len(calls) == 1
    assert not credentials.refresh_needed()


def session_with(credentials: Any) -> boto3.session.Session:
    chain = botocore.session.Session()
    chain.register_component(
        "credential_provider", CredentialResolver([_AssumedRoleProvider(credentials)])
    )
    return boto3.session.Session(botocore_session=chain, region_name="us-east-1")


def refused_refresh() -> dict[str, str]:
    raise ClientError(
        {
            "Error": {"Code": "AccessDenied", "Message": "not authorized to perform"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "AssumeRole",
    )


def sinks(credentials: Any) -> dict[str, EventBridgeSink]:
    """The boto3 client and the lean one, on one session whose credentials are ``credentials``."""
    session = session_with(credentials)
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=1)
    boto = session.client("events", endpoint_url=UNREACHABLE, config=config)
    out = {"boto3": EventBridgeSink(boto)}
    if credentials is not None:
        lean = LeanEventsClient(boto, session.get_credentials(), 1, 1.0, 1.0)
        out["lean"] = EventBridgeSink(lean)
    return out


def test_a_refused_credential_refresh_is_held() -> None:
    credentials = _AssumedRoleCredentials(refused_refresh, 3600)
    for name, sink in sinks(credentials).items():
        [outcome] = sink.send([ENTRY])
        assert outcome.kind is Kind.RETRY and outcome.hold, (name, outcome)
        assert outcome.code == "AccessDenied", (name, outcome)
        assert "refreshing AWS credentials failed (AssumeRole)" in outcome.message, outcome


def test_no_credentials_at_call_time_is_held() -> None:
    [outcome] = sinks(None)["boto3"].send([ENTRY])  # a provider answering None: no credentials
    assert outcome.kind is Kind.RETRY and outcome.hold, outcome
    assert outcome.code == NoCredentialsError.__name__


def test_role_settings() -> None:
    mappings = [{"topic": "t", "source": "s", "detail_type": "d"}]
    config = config_from_dict(
        {
            "aws": {
                "assume_role_arn": "arn:aws-us-gov:iam::210987654321:role/team/bridge-writer",
                "external_id": "ext:4242/a=b,c.d@e-f_g+h",
            },
            "mappings": mappings,
        }
    )
    assert config.aws.role_session_name == "kafka-eventbridge-bridge"
    assert config.aws.role_duration_s == 3600
    assert "ext:4242" not in repr(config)


@pytest.mark.parametrize(
    ("aws", "problem"),
    [
        ({"external_id": "ext-4242"}, "aws.external_id: used only with aws.assume_role_arn"),
        ({"role_duration_s": 900}, "aws.role_duration_s: used only with aws.assume_role_arn"),
        ({"assume_role_arn": "arn:aws:iam::123:role/x"}, "aws.assume_role_arn: String should"),
        ({"assume_role_arn": "arn:aws:iam::123456789012:user/x"}, "aws.assume_role_arn: String"),
        (
            {"assume_role_arn": "arn:aws:iam::123456789012:role/x", "external_id": "ext 4242"},
            "aws.external_id: String should match",
        ),
        (
            {"assume_role_arn": "arn:aws:iam::123456789012:role/x", "role_duration_s": 899},
            "aws.role_duration_s: Input should be greater than or equal to 900",
        ),
        (
            {"assume_role_arn": "arn:aws:iam::123456789012:role/x", "role_session_name": "a b"},
            "aws.role_session_name: String should match",
        ),
    ],
)
def test_role_settings_are_checked(aws: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {"aws": aws, "mappings": [{"topic": "t", "source": "s", "detail_type": "d"}]}
        )
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems
    assert "4242" not in str(info.value)  # the external id is not shown
