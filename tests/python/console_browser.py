"""The web console in Debian's Chromium, driven by Playwright, against a running hub holding the
demo's dossiers (tests/tests/console.rs starts it and pushes the demo).

Checks, as the agents would do it: sign-in through the development identity provider for each
role, the sections each role sees and the reason given for the others, the same page for an
out-of-reach person as for a person who does not exist, the timeline's filters and pages, the
keyboard-only path search → dossier → timeline, CSRF refusals, logout, axe-core on every page,
and no NIR in any URL the browser requested. Prints one line per check; exits 1 on the first
failure. With --screenshots DIR, saves a PNG of each page there.
"""

import argparse
import json
import re
import sys
import uuid

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import sync_playwright

NIR_MARTIN = "1850752121003"
NIR_DURAND = "2870552121004"
NIR_UNKNOWN = "1990175123456"  # a well-formed NIR nobody has

ROLES = {
    # uid: (display name, purpose, sections shown, {withheld section: reason fragment})
    "cd52.orientation": ("Camille Lefort", "orientation", ["identite", "droits_rsa", "emploi", "parcours", "engagements"],
                         {"diagnostic": "consentement de la personne"}),
    # Instruction sees the engagements reduced to the sanctions (the caisse applies them).
    "cd52.rsa": ("Julien Marchand", "instruction_rsa", ["identite", "droits_rsa", "engagements"],
                 {"emploi": "motif d’accès choisi", "parcours": "motif d’accès choisi",
                  "diagnostic": "motif d’accès choisi"}),
    "caf521.agent": ("Thomas Girard", "instruction_rsa", ["identite", "droits_rsa", "engagements"],
                     {"emploi": "motif d’accès choisi", "parcours": "motif d’accès choisi",
                      "diagnostic": "motif d’accès choisi"}),
    "ft52.conseiller": ("Inès Morel", "orientation", ["identite", "droits_rsa", "emploi", "parcours", "engagements"],
                        {"diagnostic": "consentement de la personne"}),
    "agent-cd52-0042": ("Lucie Perrin", "accompagnement",
                        ["identite", "droits_rsa", "emploi", "parcours", "engagements", "diagnostic"], {}),
}

checks = 0
axe_figures = []


def ok(message):
    global checks
    checks += 1
    print(f"ok {checks} - {message}", flush=True)


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)
    ok(message)


class Run:
    def __init__(self, browser, base, screenshots):
        self.browser = browser
        self.base = base.rstrip("/")
        self.screenshots = screenshots
        self.axe = Axe()
        self.requested = []

    def context(self):
        context = self.browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
        context.on("request", lambda request: self.requested.append(request.url))
        return context

    def audit(self, page, name):
        """axe-core on the page: no serious or critical violation."""
        results = self.axe.run(page)
        violations = results.response["violations"]
        passes = len(results.response["passes"])
        if passes == 0:
            fail(f"axe-core did not run on {name} (no rule passed)")
        bad = [v for v in violations if v.get("impact") in ("serious", "critical")]
        axe_figures.append((name, passes, len(violations), len(bad)))
        if bad:
            fail(f"axe-core on {name}: " + "; ".join(f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}" for v in bad))
        ok(f"axe-core on {name}: {passes} rules passed, no serious or critical violation ({len(violations)} minor)")
        if self.screenshots:
            page.screenshot(path=f"{self.screenshots}/{name}.png", full_page=True)

    def sign_in(self, context, uid, audit_provider=False):
        page = context.new_page()
        page.goto(f"{self.base}/console")
        expect(page.url.endswith("/console/connexion"), f"{uid}: an anonymous visit lands on the sign-in page")
        before = {c["name"]: c["value"] for c in context.cookies()}.get("passerelle_console")
        page.click("#bouton-proconnect")
        page.wait_for_url(re.compile(r".*/dev-oidc/authorize.*"))
        query = page.url.split("?", 1)[1]
        state = re.search(r"(?:^|&)state=([^&]+)", query).group(1)
        nonce = re.search(r"(?:^|&)nonce=([^&]+)", query).group(1)
        expect(len(state) >= 32 and len(nonce) >= 32 and "code_challenge=" in query,
               f"{uid}: the authorization request carries state and nonce of 32+ characters, and PKCE")
        if audit_provider:
            self.audit(page, "fournisseur-identite-developpement")
        name = ROLES.get(uid, (None,))[0]
        page.click(f"button[name=agent][value$='|{uid}']")
        page.wait_for_url(re.compile(r".*/console$"))
        after = {c["name"]: c["value"] for c in context.cookies()}.get("passerelle_console")
        expect(before is not None and after is not None and before != after,
               f"{uid}: the session id is renewed at sign-in")
        header = page.inner_text("#agent-connecte")
        if name:
            expect(name in header, f"{uid}: signed in through the development provider, the header names {name}")
        return page

    def search(self, page, purpose, nir):
        page.goto(f"{self.base}/console/recherche")
        page.click(f"label[for=motif-{purpose}]")
        page.fill("#nir", nir)
        # Wait for the answer's page itself: right after the click, the search page is still
        # the loaded one, and reading it then would compare the form with itself.
        with page.expect_navigation():
            page.click("#bouton-rechercher")
        page.wait_for_load_state()

    def main_html(self, page):
        return page.inner_html("#contenu")


def sections_of(page):
    return sorted(s.get_attribute("id").removeprefix("rubrique-") for s in page.query_selector_all("section.pl-section"))


def run(base, martin, screenshots, theme, waiting):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        session = Run(browser, base, screenshots)

        # The sign-in page, as everyone first sees it.
        context = session.context()
        page = context.new_page()
        page.goto(f"{base}/console/connexion")
        expect(page.locator(".fr-connect--pro").count() == 1, "the sign-in page shows the ProConnect button")
        expect(page.get_by_text("Qu’est-ce que ProConnect ?").count() == 1, "and the 'Qu’est-ce que ProConnect ?' link")
        response = page.request.get(f"{base}/console/connexion")
        csp = response.headers.get("content-security-policy", "")
        expect("default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp,
               "pages carry a CSP without inline script and without framing")
        expect(response.headers.get("cache-control") == "no-store", "pages are never stored (Cache-Control: no-store)")
        if theme == "neutre":
            expect(page.locator(".fr-logo").count() == 0, "the neutral theme has no Marianne block")
            expect(page.locator("link[href='/console/static/neutre.css']").count() == 1, "and drops the State's fonts")
        else:
            expect(page.locator(".fr-header .fr-logo").count() == 1, "the State's theme shows the Marianne block")
        session.audit(page, "connexion")
        context.close()

        # Each role: the sections the law lets them see, the reason for each other.
        for uid, (name, purpose, shown, withheld) in ROLES.items():
            context = session.context()
            page = session.sign_in(context, uid, audit_provider=(uid == "cd52.orientation"))
            cookies = {c["name"]: c for c in context.cookies()}
            cookie = cookies.get("passerelle_console")
            expect(cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax",
                   f"{uid}: the session cookie is HttpOnly and SameSite=Lax")
            if uid == "cd52.orientation":
                session.audit(page, "accueil")
                page.goto(f"{base}/console/recherche")
                session.audit(page, "recherche")
                page.goto(f"{base}/console/dossiers/{martin}")
                expect(page.locator("input[name=motif]").count() >= 1, "a dossier opened without a purpose asks for one")
                session.audit(page, "motif")
                for which in ("accessibilite", "mentions-legales", "donnees-personnelles", "page-inconnue"):
                    page.goto(f"{base}/console/{which}")
                    session.audit(page, which)
                page.goto(f"{base}/console")
            session.search(page, purpose, NIR_MARTIN)
            expect("/console/dossiers/" in page.url, f"{uid}: a NIR search with one result opens the dossier")
            expect(sections_of(page) == sorted(shown), f"{uid} ({purpose}): sections shown {sorted(shown)}, got {sections_of(page)}")
            for section, reason in withheld.items():
                callouts = page.locator(".pl-withheld").all_inner_texts()
                expect(any(reason in text for text in callouts),
                       f"{uid}: the withheld section {section} says why ('{reason}')")
            if uid == "cd52.orientation":
                expect("MARTIN" in page.inner_text("#rubrique-identite"), "the identity section shows the name")
                expect(NIR_MARTIN not in page.content(), "the dossier page never shows the NIR in clear")
                expect("CAF / MSA : à jour au" in page.text_content("#rubrique-droits_rsa"),
                       "each source says how fresh it is")
                expect(NIR_MARTIN not in page.title(), "no NIR in the page title")
                session.audit(page, "dossier")
                person_url = page.url
                page.click("#lien-historique")
                page.wait_for_url(re.compile(r".*/historique.*"))
                total = page.locator("#table-historique tbody tr").count()
                expect(total >= 4, f"the timeline lists the dossier's events ({total})")
                session.audit(page, "historique")
                page.select_option("#source", "allocataire")
                with page.expect_navigation():
                    page.click("#filtres-historique button[type=submit]")
                sources = set(page.locator("#table-historique tbody tr td:nth-child(2)").all_inner_texts())
                expect(sources == {"CAF / MSA"}, f"the source filter keeps only CAF facts ({sources})")
                page.fill("#depuis", "2030-01-01")
                with page.expect_navigation():
                    page.click("#filtres-historique button[type=submit]")
                expect(page.locator("#table-historique tbody tr").count() == 0, "the period filter applies")

                # A form without, or with a forged, CSRF token is refused.
                for token in (None, "forged-" + uuid.uuid4().hex):
                    form = {"motif": "orientation", "nir": NIR_MARTIN}
                    if token:
                        form["csrf"] = token
                    answer = page.request.post(f"{base}/console/recherche", form=form, max_redirects=0)
                    expect(answer.status == 403 and "Formulaire expiré" in answer.text(),
                           f"a search with {'a forged' if token else 'no'} CSRF token is refused (403)")

                # Keyboard alone: search → dossier → timeline.
                page.goto(f"{base}/console/recherche")
                page.keyboard.press("Tab")
                for _ in range(80):
                    if page.evaluate("document.activeElement && document.activeElement.id") == "nir":
                        break
                    page.keyboard.press("Tab")
                expect(page.evaluate("document.activeElement.id") == "nir", "the NIR field is reached with Tab")
                page.keyboard.type(NIR_MARTIN)
                page.keyboard.press("Enter")
                page.wait_for_url(re.compile(r".*/console/dossiers/[0-9a-f-]+\?motif=.*"))
                ok("Enter submits the search and opens the dossier")
                for _ in range(120):
                    if page.evaluate("document.activeElement && document.activeElement.id") == "lien-historique":
                        break
                    page.keyboard.press("Tab")
                expect(page.evaluate("document.activeElement.id") == "lien-historique", "the timeline link is reached with Tab")
                page.keyboard.press("Enter")
                page.wait_for_url(re.compile(r".*/historique.*"))
                ok("Enter opens the timeline: the path works with the keyboard alone")

                # A dossier with an unreadable record is flagged incomplete; Julie Durand opposed
                # the sharing of her parcours, which the département (its producer) still sees.
                session.search(page, "orientation", NIR_DURAND)
                expect(page.locator("#dossier-incomplet").count() == 1, "an incomplete dossier says so")
                expect(page.locator("#rubrique-parcours").count() == 1
                       and "Oui" in page.inner_text("#rubrique-parcours"),
                       "the producer of the parcours sees it, and the opposition recorded")

                # The territory's dashboard, its queues, their filters and the export.
                page.goto(f"{base}/console/territoire?motif=orientation")
                expect(page.locator("#compteurs .fr-tile").count() == 7, "the dashboard shows the seven queues' counters")
                expect(page.locator("figure.pl-chart svg[role=img]").count() >= 3, "the indicators are drawn as charts")
                expect(page.locator("figure.pl-chart table caption").count() == 5, "each chart has its table as text alternative")
                session.audit(page, "territoire")
                page.click("#compteurs a[href*='sdd-non-orientes']")
                page.wait_for_url(re.compile(r".*/files/sdd-non-orientes\?motif=orientation"))
                in_queue = waiting + 1
                expect(f"{in_queue} personnes" in page.inner_text("#table-file caption"),
                       f"the counter opens its queue: the {in_queue} SDD persons not oriented for 30 days")
                expect(page.locator("#table-file tbody tr").count() == 20, "the queue shows 20 persons a page")
                session.audit(page, "file")
                with page.expect_navigation():
                    page.click(".fr-pagination__link--next")
                expect(page.locator("#table-file tbody tr").count() == in_queue - 20 and "page=2" in page.url,
                       "the next page shows the rest")
                everything = page.request.get(base + page.locator("#lien-export").get_attribute("href")).body()
                expect(everything.count(b"\r\n") == in_queue + 1, "the export without filters holds the whole queue")
                page.fill("#commune", "52448")
                with page.expect_navigation():
                    page.click("#filtres-file button[type=submit]")
                expect(page.locator("#table-file tbody tr").count() == 0 and "commune=52448" in page.url,
                       "the commune filter narrows the queue, and stays in the URL")
                page.fill("#commune", "52121")
                with page.expect_navigation():
                    page.click("#filtres-file button[type=submit]")
                rows = page.locator("#table-file tbody tr")
                expect(rows.count() == 1 and "DURAND" in rows.first.inner_text(), "the person's commune keeps them")
                export = page.request.get(base + page.locator("#lien-export").get_attribute("href"))
                body = export.body()
                expect(export.status == 200 and export.headers["content-type"].startswith("text/csv")
                       and body.startswith("\ufeff".encode()) and b"reference_dossier;nom;prenoms" in body
                       and body.count(b"\r\n") == 2 and "DURAND".encode() in body,
                       "the CSV export holds exactly the rows shown (UTF-8 with BOM, ';')")
                foreign = page.request.get(base + page.locator("#lien-export").get_attribute("href"),
                                           headers={"Sec-Fetch-Site": "cross-site"})
                expect(foreign.status == 403, "an export started from another site's link is refused")
                page.request.get(f"{base}/console/deconnexion/retour")
                page.goto(f"{base}/console")
                expect(page.url.endswith("/console"), "a logout return not started here ends nothing")
                page.goto(f"{base}/console/territoire/files/sdd-non-orientes?motif=orientation&commune=abc")
                expect("code INSEE" in page.inner_text("#erreur-filtres"), "a wrong filter is explained")

                # Logout ends the session, here and at the provider.
                page.goto(person_url)
                page.click("#bouton-deconnexion")
                page.wait_for_url(re.compile(r".*/console/connexion\?raison=deconnecte"))
                expect("Vous êtes déconnecté" in page.inner_text("#avis-connexion"), "logout says it is done")
                page.goto(person_url)
                expect(page.url.endswith("/console/connexion"), "after logout the dossier asks to sign in again")
            context.close()

        # Another territory: an existing person and a person who does not exist give the same page.
        context = session.context()
        page = session.sign_in(context, "cd75.orientation")
        session.search(page, "orientation", NIR_MARTIN)
        existing = session.main_html(page)
        session.search(page, "orientation", NIR_UNKNOWN)
        missing = session.main_html(page)
        expect("Aucun dossier accessible" in existing, "an agent of another territory finds no dossier")
        if existing != missing:
            import difflib
            print("\n".join(difflib.unified_diff(existing.splitlines(), missing.splitlines(), "out of reach", "unknown", lineterm="")))
        expect(existing == missing, "the page for a person out of reach is the page for a person who does not exist")
        session.audit(page, "recherche-sans-resultat")
        page.goto(f"{base}/console/dossiers/{martin}?motif=orientation")
        status_existing = page.evaluate("document.title")
        existing = session.main_html(page)
        page.goto(f"{base}/console/dossiers/{uuid.uuid4()}?motif=orientation")
        missing = session.main_html(page)
        expect("Aucun dossier accessible" in existing and existing == missing and NIR_MARTIN not in status_existing,
               "opening an out-of-reach dossier by its id gives the page of an id that does not exist")
        context.close()

        # The DPO reads the journal, not dossiers.
        context = session.context()
        page = session.sign_in(context, "cd52.dpo")
        expect(page.locator("a[href='/console/recherche']").count() == 0, "the DPO's home offers no search")
        page.goto(f"{base}/console/recherche")
        expect("Accès refusé" in page.inner_text("h1") and "journal" in page.inner_text("#message-erreur"),
               "the DPO is refused the search, with the reason")
        session.audit(page, "acces-refuse")
        page.goto(f"{base}/console/dossiers/{martin}?motif=orientation")
        expect("Accès refusé" in page.inner_text("h1") and "journal des accès" in page.inner_text("#message-erreur"),
               "the DPO cannot open a dossier")
        page.goto(f"{base}/console/journal")
        page.fill("#personne", martin)
        with page.expect_navigation():
            page.click("#bouton-journal")
        journal = page.inner_text("#table-journal")
        expect("cd52.orientation" in journal and "Console" in journal and "Orientation" in journal,
               "the DPO finds the orientation agent's console reads of the dossier, with their purpose")
        expect("ft52.conseiller" in journal, "and the France Travail conseiller's, in the territory")
        session.audit(page, "journal")
        page.select_option("#resultat", "refused")
        page.fill("#personne", "")
        with page.expect_navigation():
            page.click("#bouton-journal")
        expect("Refusé" in page.inner_text("#table-journal"), "the outcome filter finds the refusals")
        export = page.request.get(base + page.locator("#export-journal").get_attribute("href"))
        expect(export.status == 200 and export.body().startswith("\ufeff".encode()) and b"date;canal;action" in export.body(),
               "the journal exports as CSV")
        context.close()

        # An agent of another structure: no dossier, as for anyone out of reach.
        context = session.context()
        page = session.sign_in(context, "structure.autre")
        session.search(page, "accompagnement", NIR_MARTIN)
        expect("Aucun dossier accessible" in page.inner_text("#contenu"), "another structure's agent finds nothing")
        context.close()

        # Nothing personal in any URL the browser asked for.
        leaked = [url for url in session.requested if NIR_MARTIN in url or NIR_DURAND in url or NIR_UNKNOWN in url]
        expect(not leaked, f"no NIR in any of the {len(session.requested)} URLs the browser requested")
        browser.close()
    print("axe-core: " + json.dumps(axe_figures, ensure_ascii=False))
    print(f"{checks} checks passed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("--martin", required=True, help="the person id of the demo's Paul Martin")
    parser.add_argument("--screenshots")
    parser.add_argument("--theme", default="etat", choices=["etat", "neutre"])
    parser.add_argument("--waiting", type=int, default=0, help="persons added to the SDD queue beside the demo's")
    arguments = parser.parse_args()
    run(arguments.base, arguments.martin, arguments.screenshots, arguments.theme, arguments.waiting)
