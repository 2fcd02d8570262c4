"""The person's own space in Debian's Chromium, driven by Playwright, against the hub the console
checks just used (tests/tests/console.rs runs this after tests/python/console_browser.py, so
agents have read Paul Martin's dossier).

Checks: sign-in through the development FranceConnect provider by the same code path as
production; Paul Martin sees his RSA state and référent; he sees the agents' reads of his dossier
(organisation, role, purpose, date); his download holds his facts and nobody else's; a pivot
identity matching nobody and one matching two persons get the same page; no id in a URL or a
form changes whose data is shown; he records an opposition and the next read by a France Travail
conseiller withholds his parcours with the opposition's reason, he withdraws it and it is shown
again; his consent to share his diagnostic opens it to the conseiller, its withdrawal closes it;
each choice appears in his dossier's facts as his own; axe-core on every page; no NIR in any URL
requested.
Prints one line per check; exits 1 on the first failure.
"""

import argparse
import json
import re
import sys

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import sync_playwright

NIRS = ("1850752121003", "2870552121004")
checks = 0


def ok(message):
    global checks
    checks += 1
    print(f"ok {checks} - {message}", flush=True)


def expect(condition, message):
    if not condition:
        print(f"FAILED: {message}", flush=True)
        sys.exit(1)
    ok(message)


def run(base, martin, durand, screenshots):
    axe = Axe()
    requested = []

    def audit(page, name):
        results = axe.run(page)
        bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
        expect(len(results.response["passes"]) > 0 and not bad,
               f"axe-core on {name}: no serious or critical violation"
               + "".join(f"; {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']]}" for v in bad))
        if screenshots:
            page.screenshot(path=f"{screenshots}/{name}.png", full_page=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )

        def sign_in(family, given, audit_pages=False):
            context = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
            context.on("request", lambda request: requested.append(request.url))
            page = context.new_page()
            page.goto(f"{base}/mon-espace")
            expect(page.url.endswith("/mon-espace/connexion"), f"{family}: an anonymous visit lands on the sign-in page")
            expect(page.locator("button.fr-connect").count() == 1
                   and page.get_by_text("Qu’est-ce que FranceConnect ?").count() == 1,
                   "the FranceConnect button and its 'Qu’est-ce que FranceConnect ?' link")
            if audit_pages:
                audit(page, "espace-connexion")
            page.click("button.fr-connect")
            page.wait_for_url(re.compile(r".*/dev-franceconnect/authorize.*"))
            with page.expect_navigation():
                page.click(f"button[name=agent][value^='{family}|{given}|']")
            return context, page

        # Paul Martin signs in and reads his dossier.
        context, page = sign_in("MARTIN", "Paul", audit_pages=True)
        expect(page.url.endswith("/mon-espace"), "a single match opens the person's own space")
        text = page.inner_text("#contenu")
        expect("Droit ouvert et versable" in text, "he sees his RSA right and its state")
        expect("Association d'insertion" in text or "Association d’insertion" in text,
               "and the structure of his référent")
        expect(not any(nir in page.content() for nir in NIRS), "never a NIR in clear")
        plan = page.inner_text("#rubrique-engagements")
        expect("Code de la route" in plan and "en cours" in plan and "15 h par semaine" in plan,
               f"he sees his plan d'action, its action and its hours ({plan!r})")
        diagnostic = page.inner_text("#rubrique-diagnostic")
        expect("Difficulté à payer le loyer" in diagnostic and "Existence d'un dossier MDPH" in diagnostic,
               "and his whole diagnostic, its health item included: it is his")
        audit(page, "espace-dossier")

        page.click("a[href='/mon-espace/consultations']")
        page.wait_for_url(re.compile(r".*/mon-espace/consultations$"))
        reads = page.inner_text("#table-consultations")
        expect("Département de la Haute-Marne" in reads and "Chargé(e) d’orientation" in reads and "Orientation" in reads,
               "he sees the agents' reads of his dossier: organisation, role, purpose")
        expect(re.search(r"\d{2}/\d{2}/\d{4}", reads) is not None, "with their date")
        expect("cd52.orientation" not in reads and "Camille" not in reads, "agents' names are not shown")
        expect(page.locator("a[href='/console/donnees-personnelles']").count() >= 1, "and how to contest a read")
        audit(page, "espace-consultations")

        download = page.request.get(f"{base}/mon-espace/mes-donnees.json")
        data = download.json()
        expect(download.status == 200 and "attachment" in download.headers.get("content-disposition", ""),
               "his data downloads as a JSON file")
        expect(data["identite"]["nom"] == "MARTIN" and len(data["evenements"]) >= 4 and data["resume"],
               "with his identity, his facts and a readable summary")
        expect(len(data["dossier"]["diagnostic"]["situations"]) == 3
               and data["dossier"]["engagements"]["plan"]["actions"][0]["id"] == "permis-b",
               "his diagnostic and his plan are in the file (right of access)")
        dumped = json.dumps(data, ensure_ascii=False)
        expect("DURAND" not in dumped and "Julie" not in dumped and NIRS[1] not in dumped,
               "and nothing of his spouse's or anyone else's")

        def conseiller_reads():
            """The sections a France Travail conseiller of his territory is shown of his dossier
            (purpose orientation), and the reasons given for the others."""
            agent = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
            reader = agent.new_page()
            reader.goto(f"{base}/console/connexion")
            reader.click("#bouton-proconnect")
            reader.wait_for_url(re.compile(r".*/dev-oidc/authorize.*"))
            reader.click("button[name=agent][value$='|ft52.conseiller']")
            reader.wait_for_url(re.compile(r".*/console$"))
            reader.goto(f"{base}/console/dossiers/{martin}?motif=orientation")
            shown = sorted(s.get_attribute("id").removeprefix("rubrique-")
                           for s in reader.query_selector_all("section.pl-section"))
            reasons = " ".join(reader.locator(".pl-withheld").all_inner_texts())
            agent.close()
            return shown, reasons

        def choose(button, outcome_id, expected):
            page.goto(f"{base}/mon-espace/mes-choix")
            page.click(button)
            page.wait_for_url(re.compile(r".*/mon-espace/mes-choix\?enregistre=applique$"))
            expect(expected in page.inner_text(outcome_id) and page.locator("#avis-choix").count() == 1,
                   f"the choice is recorded and already applies: '{expected}'")

        shown, _ = conseiller_reads()
        expect(shown == ["droits_rsa", "emploi", "engagements", "identite", "parcours"],
               f"before any choice, the France Travail conseiller sees his parcours ({shown})")
        page.goto(f"{base}/mon-espace/mes-choix")
        expect("Votre accompagnement est partagé" in page.inner_text("#etat-opposition")
               and "n’est montré qu’à votre référent" in page.inner_text("#etat-consentement"),
               "his choices page says what is shared today, in plain words")
        audit(page, "espace-choix")
        choose("#bouton-opposition", "#etat-opposition", "Vous vous êtes opposé(e)")
        shown, reasons = conseiller_reads()
        expect("parcours" not in shown and "diagnostic" not in shown and "droits_rsa" in shown
               and "opposée au partage" in reasons,
               f"after his opposition the conseiller's next read withholds the parcours, saying why ({shown})")
        page.goto(f"{base}/mon-espace")
        facts = page.inner_text("#table-faits")
        expect("Opposition au partage enregistrée" in facts and "vous-même, depuis votre espace" in facts,
               "his opposition is a fact of his dossier, sent by himself")
        choose("#bouton-opposition", "#etat-opposition", "Votre accompagnement est partagé")
        shown, _ = conseiller_reads()
        expect(shown == ["droits_rsa", "emploi", "engagements", "identite", "parcours"],
               f"once he withdraws it, the parcours is shown again ({shown})")
        choose("#bouton-consentement", "#etat-consentement", "Vous avez accepté")
        shown, _ = conseiller_reads()
        expect("diagnostic" in shown, f"his consent opens his diagnostic to the conseiller ({shown})")
        choose("#bouton-consentement", "#etat-consentement", "n’est montré qu’à votre référent")
        shown, reasons = conseiller_reads()
        expect("diagnostic" not in shown and "consentement de la personne" in reasons,
               f"its withdrawal closes it again ({shown})")
        # A forged form: another person's id, an unknown choice, no CSRF token.
        token = page.locator("#choix-opposition input[name=csrf]").get_attribute("value")
        forged = page.request.post(f"{base}/mon-espace/mes-choix", form={
            "csrf": token, "choix": "opposition", "valeur": "oui", "person_id": durand}, max_redirects=0)
        expect(forged.status == 303, "a choice posted with another person's id is recorded, for himself only")
        page.goto(f"{base}/mon-espace/mes-choix")
        choose("#bouton-opposition", "#etat-opposition", "Votre accompagnement est partagé")
        unknown = page.request.post(f"{base}/mon-espace/mes-choix", form={
            "csrf": token, "choix": "referent", "valeur": "oui"}, max_redirects=0)
        expect(unknown.status == 400, "a choice that is none of his gets a clear refusal")
        no_token = page.request.post(f"{base}/mon-espace/mes-choix", form={
            "choix": "opposition", "valeur": "oui"}, max_redirects=0)
        expect(no_token.status == 403, "a choice posted without the form's token is refused")

        # Ids in URLs or forms change nothing: the person comes from the session.
        for url in (f"{base}/mon-espace?person_id={durand}", f"{base}/mon-espace/consultations?person_id={durand}",
                    f"{base}/mon-espace/mes-donnees.json?person_id={durand}"):
            answer = page.request.get(url)
            expect(answer.status == 200 and "DURAND" not in answer.text() and "Julie" not in answer.text()
                   and ("MARTIN" in answer.text() or "Paul" in answer.text()),
                   f"an id in the URL shows nothing of another person ({url.split(base)[1].split('?')[0]})")
        page.click("#bouton-deconnexion")
        page.wait_for_url(re.compile(r".*/mon-espace/connexion\?raison=deconnecte"))
        page.goto(f"{base}/mon-espace")
        expect(page.url.endswith("/mon-espace/connexion"), "after logout the space asks to sign in again")
        context.close()

        # Nobody, and two persons: the same page, which tells what to do and nothing of who exists.
        context, page = sign_in("INCONNU", "Claude")
        nobody = page.inner_html("#contenu")
        expect("/mon-espace/non-identifie" in page.url and "département" in page.inner_text("#contenu"),
               "a pivot identity matching nobody gets the page that says whom to contact")
        audit(page, "espace-non-identifie")
        context.close()
        context, page = sign_in("JUMEAU", "Alex")
        expect(page.inner_html("#contenu") == nobody, "one matching two persons gets exactly the same page")
        page.goto(f"{base}/mon-espace")
        expect(page.url.endswith("/mon-espace/connexion"), "and no space is opened")
        context.close()

        leaked = [url for url in requested if any(nir in url for nir in NIRS) or "MARTIN" in url.upper()]
        expect(not leaked, f"no NIR or name in any of the {len(requested)} URLs the browser requested")
        browser.close()
    print(f"{checks} checks passed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("--martin", required=True, help="the person id of the demo's Paul Martin")
    parser.add_argument("--durand", required=True, help="the person id of the demo's Julie Durand")
    parser.add_argument("--screenshots")
    arguments = parser.parse_args()
    run(arguments.base, arguments.martin, arguments.durand, arguments.screenshots)
