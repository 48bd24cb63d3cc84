"""Inbound sources in the routing file: built from the dui_gateway.sources entry points at
start-up, refused with a pointer when wrong, under the same TLS policy as destinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.webhook.receipts import WebhookReceiptSource
from connectors.webhook.signing import new_secret
from gateway.routing import RoutingConfigError, build_sources, parse_config
from gateway.settings import Settings

HOOK = {"connector": "webhook", "category": "webhook", "settings": {"url": "https://d.example", "signing": False}}


def _config(sources: dict) -> object:
    return parse_config({"destinations": {"hook": HOOK}, "sources": sources})


def test_a_configured_source_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIPT_SECRET", new_secret())
    built = build_sources(
        _config(
            {
                "receipts": {
                    "source": "webhook-receipts",
                    "tenant": "demo",
                    "destinations": ["hook"],
                    "settings": {"signing_secrets": ["env:RECEIPT_SECRET"]},
                }
            }
        ),
        source="routing.yaml",
    )
    assert isinstance(built["receipts"].source, WebhookReceiptSource)
    assert built["receipts"].tenant == "demo" and built["receipts"].destinations == ("hook",)


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"r": {"source": "nope", "tenant": "demo"}}, r"routing\.yaml#/sources/r/source: unknown source 'nope'"),
        (
            {"r": {"source": "webhook-receipts", "tenant": "demo", "destinations": ["ghost"]}},
            r"routing\.yaml#/sources/r/destinations/0: unknown destination 'ghost'",
        ),
        (
            {"r": {"source": "webhook-receipts", "tenant": "demo", "settings": {"signing_secrets": ["whsec_literal"]}}},
            r"routing\.yaml#/sources/r/settings/signing_secrets",
        ),
        ({"r w": {"source": "webhook-receipts", "tenant": "demo"}}, r"a source name has"),
    ],
)
def test_wrong_sources_stop_start_up_with_a_pointer(sources: dict, message: str) -> None:
    with pytest.raises(RoutingConfigError, match=message):
        build_sources(_config(sources), source="routing.yaml")


def test_sources_follow_the_tls_policy(tmp_path: Path) -> None:
    imap = {
        "source": "mssante-imap",
        "tenant": "demo",
        "settings": {"host": "imap.example", "essms_finess": "759900004", "verify_tls": False},
    }
    prod = Settings(profile="test", master_keys="k:" + "A" * 43 + "=", audit_keys="a:" + "B" * 43 + "=")
    with pytest.raises(RoutingConfigError, match=r"sources/box/settings/verify_tls"):
        build_sources(_config({"box": imap}), settings=prod, source="routing.yaml")
