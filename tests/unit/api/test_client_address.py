"""api.ratelimit.client_address: X-Forwarded-For is believed only from ACAR_TRUSTED_PROXIES (RFC 7239 section 7.4)."""

from __future__ import annotations

from api.ratelimit import client_address, parse_networks

PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("198.51.100.7", ["203.0.113.9"], ()) == "198.51.100.7"
    assert client_address("198.51.100.7", ["203.0.113.9"], PROXIES) == "198.51.100.7"  # peer not a proxy


def test_behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() -> None:
    assert client_address("10.0.0.2", ["203.0.113.9"], PROXIES) == "203.0.113.9"
    # a client cannot choose its address by sending X-Forwarded-For itself: only the hop the proxy appended counts
    assert client_address("10.0.0.2", ["1.2.3.4, 203.0.113.9"], PROXIES) == "203.0.113.9"
    assert client_address("10.0.0.2", ["1.2.3.4, 203.0.113.9, 10.0.0.3"], PROXIES) == "203.0.113.9"
    assert client_address("10.0.0.2", ["1.2.3.4", "203.0.113.9"], PROXIES) == "203.0.113.9"  # repeated headers
    assert client_address("10.0.0.2", ["garbage, 203.0.113.9"], PROXIES) == "203.0.113.9"
    assert client_address("10.0.0.2", ["203.0.113.9, garbage"], PROXIES) == "10.0.0.2"  # nothing past garbage
    assert client_address("10.0.0.2", [], PROXIES) == "10.0.0.2"
    assert client_address("10.0.0.2", ["10.0.0.9"], PROXIES) == "10.0.0.9"  # all trusted: the farthest


def test_ipv6_clients_are_counted_per_64() -> None:
    assert client_address("2001:db8:1:2:aaaa::1", [], ()) == "2001:db8:1:2::/64"
    assert client_address("2001:db8:1:2:bbbb::9", [], ()) == "2001:db8:1:2::/64"
    assert client_address("::ffff:198.51.100.7", [], ()) == "198.51.100.7"
    assert client_address("fd00::1", ["[2001:db8::5]:4431"], PROXIES) == "2001:db8::/64"
