"""Fixtures of the end-to-end tests: a server with E2EE required, and SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from chat_server.settings import Settings
from tests.conftest import run_server
from tests.helpers import ServerInfo


@pytest.fixture
async def e2ee_server(settings: Settings) -> AsyncIterator[ServerInfo]:
    """A real server with ``REQUIRE_E2EE=true`` (the default in production)."""
    async for info in run_server(replace(settings, require_e2ee=True)):
        yield info
