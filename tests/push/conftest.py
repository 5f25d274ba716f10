"""Fixtures of the push tests: the test push service, and a server allowed to call it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from chat_server.settings import Settings
from tests.conftest import run_server
from tests.helpers import ServerInfo
from tests.push.pushservice import TestPushService, running_push_service


@pytest.fixture
async def push_service() -> AsyncIterator[TestPushService]:
    async with running_push_service() as svc:
        yield svc


@pytest.fixture
def push_settings(settings: Settings) -> Settings:
    """Settings of a server that may call the loopback push service (the test-only setting)."""
    return replace(settings, push_allow_loopback=True, push_backoff_seconds=0.2)


@pytest.fixture
async def push_server(
    push_settings: Settings, push_service: TestPushService
) -> AsyncIterator[ServerInfo]:
    async for info in run_server(push_settings):
        push_service.expected_vapid_key = info.services.push.vapid.public_key
        yield info
