"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The browser is the one scripts/install-test-deps.sh installs (no Playwright browser download);
``DUI_GATEWAY_CHROMIUM`` points elsewhere. Where neither it nor Playwright can be had the tests
skip and say why. Screenshots are saved under ``var/test-artifacts/console/`` (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.api.live import Api
from tests.gateway.api.support import note, post_note
from tests.gateway.console.conftest import FINESS_A, PASSWORD, World

ARTIFACTS = Path(__file__).resolve().parents[3] / "var" / "test-artifacts" / "console"


def _chromium_path() -> str | None:
    for candidate in (os.environ.get("DUI_GATEWAY_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


# module scope: Playwright's sync API runs an event loop in this thread while it is open, and
# later tests call asyncio.run()
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright (Python) is not installed: pip install -e .[test]")
    path = _chromium_path()
    if path is None:
        pytest.skip("no chromium: run scripts/install-test-deps.sh as root (Debian package 'chromium')")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any, live: str) -> Iterator[Any]:
    context = chromium.new_context(base_url=live, viewport={"width": 1366, "height": 768}, locale="fr-FR")
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page: Any, username: str, password: str = PASSWORD, *, start: str = "/console/flux") -> None:
    page.goto(start)
    page.get_by_label("Identifiant").fill(username)
    page.get_by_label("Mot de passe").fill(password)
    page.get_by_role("button", name="Se connecter").click()


def test_local_login_then_flows_list_and_filters(page: Any, users: dict[str, str], world: World) -> None:
    page.goto("/console/flux")
    assert "/console/connexion" in page.url
    assert page.locator("html").get_attribute("lang") == "fr"
    shot(page, "login")
    login(page, "lea")
    page.get_by_role("heading", name="Flux de documents").wait_for()
    assert page.url.endswith("/console/flux")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 3
    page.get_by_label("Statut", exact=True).select_option("rejected")
    page.get_by_role("button", name="Filtrer").click()
    page.wait_for_url(re.compile(r"statut=rejected"))
    assert page.locator("table.list tbody tr").count() == 1
    assert world.rejected_a in page.locator("table.list tbody").inner_html()
    page.get_by_role("link", name="Effacer les filtres").click()
    page.get_by_label("Recherche (identifiant de soumission ou référence personne)").fill(world.failed_a)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name=re.compile("Soumission")).wait_for()
    assert world.failed_a in page.url


def test_counters_update_live(page: Any, users: dict[str, str], world: World, live: str) -> None:
    login(page, "lea")
    received = page.locator('[data-status="received"]')
    assert received.inner_text() == "0"
    api = Api(live)
    try:
        assert post_note(api, world.key_a, note(FINESS_A, person_ref="P-A-NEW")).status_code == 202
    finally:
        api.close()
    # no reload: the page's script polls the counts endpoint
    from playwright.sync_api import expect

    expect(received).to_have_text("1", timeout=20_000)
    assert "mis à jour" in page.locator("#maj").inner_text()
    shot(page, "flux")


def test_detail_document_and_retry_with_confirmation(page: Any, users: dict[str, str], world: World) -> None:
    login(page, "oscar")
    page.goto(f"/console/flux/{world.failed_a}?t={world.tenant_a}")
    assert page.get_by_role("heading", name="Envois").is_visible()
    assert "boîte aux lettres pleine" in page.content()
    shot(page, "detail")
    page.get_by_role("link", name="Relancer cet envoi…").click()
    page.get_by_role("heading", name="Relancer l'envoi").wait_for()
    page.get_by_role("button", name="Valider").click()  # not confirmed: the browser keeps the form
    assert "/confirmer" in page.url
    page.get_by_label("Je confirme : relancer l'envoi").check()
    page.get_by_role("button", name="Valider").click()
    page.get_by_role("status").wait_for()
    assert "relance" in page.get_by_role("status").inner_text()
    assert "Relancer cet envoi" not in page.content()  # pending again: nothing to retry
    page.get_by_role("link", name="Lire le document note").click()
    page.get_by_role("heading", name="Traitements").wait_for()
    assert "Paracétamol 1 g" in page.content()
    shot(page, "document")


def test_role_restrictions(page: Any, users: dict[str, str], world: World) -> None:
    login(page, "lea")
    page.goto(f"/console/flux/{world.failed_a}?t={world.tenant_a}")
    assert page.get_by_role("link", name="Relancer cet envoi…").count() == 0
    assert page.get_by_role("link", name="Audit").count() == 0
    page.get_by_role("button", name="Se déconnecter").click()
    login(page, "adam", start="/console/")
    page.get_by_role("heading", name="Journal d'audit").wait_for()
    assert page.get_by_role("link", name="Flux").count() == 0
    page.goto(f"/console/flux?t={world.tenant_a}")
    assert page.get_by_role("heading", name="Accès refusé").is_visible()
    page.goto("/console/tableau-de-bord")
    assert page.locator("svg.chart").count() == 4
    shot(page, "dashboard")


def test_lockout_in_the_browser(page: Any, users: dict[str, str]) -> None:
    for _ in range(3):
        login(page, "oscar", "mauvais-mot-de-passe", start="/console/connexion")
        assert "incorrect" in page.get_by_role("alert").inner_text() or "verrouillé" in page.content()
    login(page, "oscar", start="/console/connexion")
    assert "verrouillé" in page.get_by_role("alert").inner_text()


def test_forged_csrf_token_is_refused(page: Any, users: dict[str, str], world: World) -> None:
    login(page, "oscar")
    page.goto(f"/console/flux/{world.failed_a}/confirmer?t={world.tenant_a}&action=cancel")
    page.evaluate("document.querySelector('main input[name=csrf]').value = 'forged'")
    page.get_by_label(re.compile("Je confirme")).check()
    page.get_by_role("button", name="Valider").click()
    page.wait_for_load_state()
    shot(page, "csrf-refused")
    page.get_by_role("heading", name="Requête refusée").wait_for()
    page.goto(f"/console/flux/{world.failed_a}?t={world.tenant_a}")
    assert "annulé" not in page.locator("dl.facts").first.inner_text()


def test_oidc_login_in_the_browser(page: Any, users: dict[str, str]) -> None:
    page.goto("/console/connexion")
    page.get_by_role("link", name="Se connecter avec Fournisseur de test").click()
    page.get_by_role("heading", name="Flux de documents").wait_for()
    assert "Olive" in page.locator("header .user").inner_text()


def test_keyboard_navigation(page: Any, users: dict[str, str]) -> None:
    page.goto("/console/connexion")
    # autofocus: Chromium applies it once the page is rendered, a moment after the load event
    page.wait_for_function("document.activeElement && document.activeElement.id === 'identifiant'", timeout=10_000)
    page.keyboard.type("lea")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Flux de documents").wait_for()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Aller au contenu"
    page.keyboard.press("Enter")  # the skip link moves the focus to the content
    assert page.evaluate("document.activeElement.id") == "contenu"
    # every form control of the filters has a label
    unlabeled = page.evaluate(
        """[...document.querySelectorAll('main input:not([type=hidden]), main select')]
           .filter(e => !(e.labels && e.labels.length)).map(e => e.name)"""
    )
    assert unlabeled == []


def test_admin_creates_an_api_client_sees_the_secret_once_then_revokes_it(
    page: Any, users: dict[str, str], world: World, live: str
) -> None:
    """End to end in Chromium: create a client (keyboard and labels), its secret shown once, a token
    from /oauth/token with it, revocation with confirmation, the token request refused."""
    import requests

    login(page, "adam", start="/console/administration")
    page.get_by_role("heading", name="Administration", exact=True).wait_for()
    page.get_by_role("link", name="Clients API de og-a").click()
    page.get_by_role("heading", name=re.compile("Clients API de")).wait_for()
    page.get_by_label("Nom du client").fill("DUI navigateur")
    page.get_by_label(re.compile("submissions:write")).uncheck()  # checked by default
    page.get_by_label(re.compile("submissions:read")).check()
    page.get_by_label("Nom du client").press("Enter")  # the keyboard submits the form
    page.get_by_role("heading", name=re.compile("Client « DUI navigateur » créé")).wait_for()
    assert "plus jamais affichées" in page.get_by_role("alert").inner_text()
    client_id = page.locator("#client-id").inner_text()
    secret = page.locator("#secret-client").inner_text()
    shot(page, "admin-secret-once")

    def token_status() -> int:
        return requests.post(f"{live}/oauth/token", data={"grant_type": "client_credentials"},
                             auth=(client_id, secret), timeout=30).status_code  # fmt: skip

    assert token_status() == 200
    page.get_by_role("link", name=re.compile("revenir aux clients")).click()
    assert secret not in page.content()
    page.get_by_role("link", name="Révoquer… DUI navigateur").click()
    page.get_by_role("heading", name=re.compile("Révoquer le client")).wait_for()
    page.get_by_role("button", name="Révoquer le client").click()  # not confirmed: the browser keeps the form
    assert "/revocation" in page.url and token_status() == 200
    page.get_by_label(re.compile("Je confirme la révocation")).focus()  # then the keyboard only
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "valider"
    page.keyboard.press("Enter")
    page.get_by_role("status").filter(has_text="Client révoqué").wait_for()
    shot(page, "admin-clients")
    assert token_status() == 401


# -- indicators and linking unmatched persons (issues #11 and #12) ----------------------------
def test_indicators_page_chart_table_keyboard_and_export(
    page: Any, users: dict[str, str], world: World, session_factory: Any, keyring: Any
) -> None:
    from tests.gateway.console.seed import seed_indicators

    seed_indicators(session_factory, keyring, tenant_id=world.tenant_a, finess=FINESS_A)
    login(page, "lea")
    page.get_by_role("link", name="Indicateurs").click()
    page.get_by_role("heading", name="Indicateurs d'activité").wait_for()
    chart = page.get_by_role("img", name=re.compile("Taux d'occupation par mois"))
    assert chart.count() == 1 and chart.locator("polyline").count() >= 2
    assert page.locator("#donnees-occupation tbody tr").count() == 12
    # keyboard only: to the period field, a quarter, quarters in the chart, submit with Enter
    page.get_by_label("Période", exact=True).focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("2026-Q1")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "decoupage"
    page.keyboard.press("ArrowDown")  # "par trimestre"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"periode=2026-Q1.*decoupage=quarter"))
    page.get_by_role("heading", name="Chiffres clés : T1 2026").wait_for()
    assert page.locator("#donnees-occupation tbody tr").count() == 4
    realised = page.locator("#chiffres-cles tbody tr", has_text="Journées réalisées").locator("td").first
    assert realised.inner_text() == "123"
    unlabeled = page.evaluate(
        """[...document.querySelectorAll('main input:not([type=hidden]), main select')]
           .filter(e => !(e.labels && e.labels.length)).map(e => e.name)"""
    )
    assert unlabeled == []
    shot(page, "indicateurs")
    with page.expect_download() as info:
        page.get_by_role("link", name="Télécharger en CSV").click()
    lines = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "layout_version,finess,period,accommodation,indicator,breakdown,value"
    assert "1.0,750000010,2026-Q1,all,days_realised,,123" in lines
    # a month from the chart's table, by keyboard: its link opens that month's figures
    page.get_by_role("link", name="Chiffres clés : T2 2026").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Chiffres clés : T2 2026").wait_for()


def test_link_an_unmatched_person_by_hand(page: Any, users: dict[str, str], world: World, session_factory: Any,
                                          keyring: Any) -> None:  # fmt: skip
    from gateway import persons
    from gateway.storage.db import session_scope
    from tests.gateway.console.seed import seed_unmatched

    ipp = "urn:oid:1.2.250.1.71.4.2.2.999|IPP-4242"
    entry = seed_unmatched(session_factory, keyring, tenant_id=world.tenant_a, finess=FINESS_A,
                           source="mllp-ch-demo", identifiers=[ipp])  # fmt: skip
    login(page, "oscar")
    page.get_by_role("link", name="Personnes à rattacher").click()
    page.get_by_role("heading", name="Personnes à rattacher").wait_for()
    assert "IPP-4242" not in page.locator("main").inner_text()  # the list identifies no one
    page.get_by_role("link", name=re.compile("Ouvrir le message")).click()
    page.get_by_role("heading", name="Message à rattacher").wait_for()
    assert "IPP-4242" in page.locator("#identifiants").inner_text()
    page.get_by_label("Référence personne du DUI").fill("P-A-001")
    page.keyboard.press("Enter")  # not confirmed: the browser keeps the form
    assert page.url.endswith(f"/personnes-a-rattacher/{entry}?t={world.tenant_a}")
    page.get_by_label("Je confirme que ce message concerne cette personne").focus()
    page.keyboard.press("Space")
    shot(page, "rattachement")
    page.get_by_role("button", name="Rattacher").click()
    assert "1 message(s) rattaché(s)" in page.get_by_role("status").inner_text()
    assert page.locator("#a-rattacher tbody").inner_text().strip() == "Aucun message."
    with session_scope(session_factory) as session:
        assert persons.match(session, world.tenant_a, [ipp]) == "P-A-001"
    page.get_by_role("link", name="Voir les messages déjà rattachés").click()
    assert "P-A-001" in page.locator("#a-rattacher tbody").inner_text()
