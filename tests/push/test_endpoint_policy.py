"""The endpoint policy: https on public addresses only, checked after resolution."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from notifications.endpoint import (
    EndpointPolicy,
    EndpointRefused,
    address_allowed,
    check_endpoint,
)

DEFAULT = EndpointPolicy()
TESTS = EndpointPolicy(allow_loopback=True)


def resolver(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> Sequence[str]:
        return addresses

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata (link-local)
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "fe80::1",
        "fd00::1",  # unique-local
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "not-an-address",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address, DEFAULT)


@pytest.mark.parametrize("address", ["142.250.74.74", "2a00:1450:4007:80e::200a"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address, DEFAULT)


def test_loopback_only_under_the_test_setting() -> None:
    assert address_allowed("127.0.0.1", TESTS)
    assert address_allowed("::1", TESTS)
    assert not address_allowed("10.0.0.1", TESTS)


async def test_a_public_name_resolving_to_a_private_address_is_refused() -> None:
    url = "https://push.example.net/abc"
    await check_endpoint(url, DEFAULT, resolver("142.250.74.74"))
    with pytest.raises(EndpointRefused) as e:
        await check_endpoint(url, DEFAULT, resolver("142.250.74.74", "10.0.0.7"))
    assert e.value.code == "endpoint_refused"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://push.example.net/abc", "endpoint_refused"),
        ("ftp://push.example.net/abc", "endpoint_refused"),
        ("https://user:pw@push.example.net/abc", "endpoint_invalid"),
        ("https:///abc", "endpoint_invalid"),
        ("https://push.example.net:99999/abc", "endpoint_invalid"),
        ("https://push.example.net/" + "a" * 3000, "endpoint_invalid"),
    ],
)
async def test_bad_urls_are_refused(url: str, code: str) -> None:
    with pytest.raises(EndpointRefused) as e:
        await check_endpoint(url, DEFAULT, resolver("142.250.74.74"))
    assert e.value.code == code


async def test_real_resolution_of_localhost_is_refused_by_default() -> None:
    with pytest.raises(EndpointRefused) as e:
        await check_endpoint("https://localhost/push/1", DEFAULT)
    assert e.value.code == "endpoint_refused"
    # The test setting accepts it (http included): where the tests' push service listens.
    await check_endpoint("http://localhost:9/push/1", TESTS)


async def test_unresolvable_host() -> None:
    with pytest.raises(EndpointRefused) as e:
        await check_endpoint("https://no-such-host.invalid/x", DEFAULT)
    assert e.value.code == "endpoint_unresolvable"


async def test_allow_list() -> None:
    policy = EndpointPolicy(allowed_hosts=("push.services.mozilla.com", "fcm.googleapis.com"))
    ok = resolver("142.250.74.74")
    await check_endpoint("https://fcm.googleapis.com/fcm/send/x", policy, ok)
    await check_endpoint("https://updates.push.services.mozilla.com/wpush/v2/x", policy, ok)
    for url in ("https://evil.example/x", "https://fcm.googleapis.com.evil.example/x"):
        with pytest.raises(EndpointRefused) as e:
            await check_endpoint(url, policy, ok)
        assert e.value.code == "endpoint_refused"
