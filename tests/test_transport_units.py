"""Unit: the wire to the CA reads the environment once per host, as requests itself
would read it on every request: the same proxies (no_proxy honoured), the same CA
bundle variables, and no netrc credentials."""

from __future__ import annotations

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import JWKEC

from certagent.acmeclient.transport import Network


def network(bundle: str | None = None) -> Network:
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    return Network(key, bundle, 5.0, lambda seconds: None, 0.0)


def test_proxies_are_those_requests_finds_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                "https_proxy", "all_proxy", "no_proxy"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.test:3128")
    monkeypatch.setenv("no_proxy", "ca.internal.test,.corp.test")
    net = network()
    assert not net.session.trust_env
    for url in ("https://acme.example.test/dir", "https://ca.internal.test/dir",
                "https://x.corp.test:14000/dir"):  # fmt: skip
        assert net.proxies_for(url) == requests.utils.get_environ_proxies(url)
    assert net.proxies_for("https://acme.example.test/new-order")["https"] == \
        "http://proxy.test:3128"  # fmt: skip
    assert net.proxies_for("https://ca.internal.test/new-order") == {}
    monkeypatch.setenv("https_proxy", "http://other.test:1")  # read once per host
    assert net.proxies_for("https://acme.example.test/x")["https"] == "http://proxy.test:3128"


def test_the_ca_bundle_is_the_configured_one_else_the_environments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    assert network().verify_ssl is True
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/curl.pem")
    assert network().verify_ssl == "/etc/ssl/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/requests.pem")
    assert network().verify_ssl == "/etc/ssl/requests.pem"
    assert network("/var/lib/certagent/trust/ca-bundle.pem").verify_ssl == \
        "/var/lib/certagent/trust/ca-bundle.pem"  # fmt: skip
