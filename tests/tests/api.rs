//! The API feuille de route end to end: histories pushed through ingestion, then read over
//! REST by each kind of agent, with exactly the sections the law lets them see, the reason for
//! each withheld one, a journal row for every read and refusal, and a journal the application's
//! database role cannot alter.

mod fixtures;

use std::time::{Duration, Instant};

use fixtures::*;
use passerelle_e2e::TestHub;
use passerelle_ingest::proto::{
    self, Location, allocataire_ingest_client::AllocataireIngestClient,
    demandeur_emploi_ingest_client::DemandeurEmploiIngestClient, orientation_event::Fact as Cd,
    orientation_ingest_client::OrientationIngestClient,
};
use serde_json::{Value, json};
use uuid::Uuid;

const NIR_BERNARD: &str = "1920375056123";

struct Client {
    http: reqwest::Client,
    base: String,
    hub_config: passerelle::config::Config,
    key: std::path::PathBuf,
}

/// One answer: status, body, request id.
struct Answer {
    status: u16,
    body: Value,
    request_id: Option<Uuid>,
}

impl Client {
    fn token(&self, agent: &str) -> String {
        passerelle::dev_token(&self.hub_config, agent, &self.key, 600).expect("a development token")
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let request_id =
            response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body, request_id })
    }

    async fn get(&self, agent: Option<&str>, path: &str, purpose: Option<&str>) -> anyhow::Result<Answer> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(agent) = agent {
            request = request.bearer_auth(self.token(agent));
        }
        if let Some(purpose) = purpose {
            request = request.header("X-Motif-Acces", purpose);
        }
        self.send(request).await
    }

    async fn search(&self, agent: &str, body: Value) -> anyhow::Result<Answer> {
        self.send(
            self.http
                .post(format!("{}/api/v1/personnes/recherche", self.base))
                .bearer_auth(self.token(agent))
                .json(&body),
        )
        .await
    }

    async fn dossier(&self, agent: &str, person: Uuid, purpose: &str) -> anyhow::Result<Answer> {
        self.get(Some(agent), &format!("/api/v1/dossiers/{person}"), Some(purpose)).await
    }
}

fn sections(answer: &Answer) -> Vec<String> {
    let mut shown: Vec<String> =
        answer.body["sections"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    shown.sort();
    shown
}

fn withheld(answer: &Answer) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = answer.body["sections_masquees"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| (i["section"].as_str().unwrap_or("").to_owned(), i["motif"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    list
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut owned: Vec<(String, String)> = list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
    owned.sort();
    owned
}

fn names(list: &[&str]) -> Vec<String> {
    let mut owned: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    owned.sort();
    owned
}

async fn journal_row(
    pool: &sqlx::PgPool,
    request_id: Option<Uuid>,
) -> anyhow::Result<(String, Option<String>, Vec<String>, Value)> {
    let request_id = request_id.ok_or_else(|| anyhow::anyhow!("no X-Request-Id"))?;
    let rows: Vec<(String, Option<String>, Vec<String>, Value)> = sqlx::query_as(
        "SELECT outcome, purpose, sections_shown, sections_withheld FROM journal.entries WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_all(pool)
    .await?;
    anyhow::ensure!(rows.len() == 1, "one journal row per request, found {}", rows.len());
    Ok(rows.into_iter().next().expect("one row"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_sees_exactly_what_the_law_lets_them_and_every_read_is_journaled() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let keys = hub.subject_keys();
    let pool = hub.running.pool.clone();
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    let mut cd_client = OrientationIngestClient::new(hub.channel_as("cd-52").await?);

    // Legrand: RSA open, SDD, registered at France Travail, oriented with a référent.
    caf_client.publish(caf("a-caf-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("a-caf-2", "2026-09-20T09:00:01+02:00", legrand(), "DEM", sdd(true))).await?;
    ft_client.publish(ft_inscription("a-ft-1", person(NIR_LEGRAND, FT_LEGRAND, "", "", ""))).await?;
    cd_client
        .publish(cd(
            "a-cd-1",
            "2026-10-02T14:00:00+02:00",
            legrand(),
            Cd::OrientationDecided(proto::OrientationDecided {
                r#type: "SOCIO_PRO".into(),
                structure_siret: "73282932000074".into(),
                structure_nom: String::new(),
                referent: Some(referent()),
            }),
        ))
        .await?;
    // Fontaine: same household, registered at France Travail, opposed to the parcours processing.
    caf_client.publish(caf("a-caf-3", "2026-09-20T09:00:02+02:00", fontaine(), "CJT", sdd(true))).await?;
    ft_client.publish(ft_inscription("a-ft-2", person(NIR_FONTAINE, FT_ONLY, "", "", ""))).await?;
    cd_client
        .publish(cd(
            "a-cd-2",
            "2026-10-03T14:00:00+02:00",
            fontaine(),
            Cd::OppositionRecorded(proto::OppositionRecorded {}),
        ))
        .await?;
    // Bernard: SDD in Haute-Marne, then moved to Paris.
    let bernard = || person(NIR_BERNARD, "", "BERNARD", "Karim", "1992-03-20");
    caf_client.publish(caf("a-caf-4", "2026-06-01T09:00:00+02:00", bernard(), "DEM", sdd(true))).await?;
    let mut moved = caf("a-caf-5", "2026-10-15T09:00:00+02:00", bernard(), "DEM", right_opened());
    moved.location = Some(Location { receiving_authority: "075".into(), commune: "75056".into() });
    caf_client.publish(moved).await?;

    let person_of = |nir: &str| {
        let key = keys.nir(&passerelle_domain::Nir::parse(nir).expect("nir")).as_str().to_owned();
        let pool = pool.clone();
        async move { passerelle_readmodel::person_of_subject(&pool, &key).await }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM person_events").fetch_one(&pool).await?;
        let moved: Option<(Option<String>,)> =
            sqlx::query_as("SELECT territory FROM dossiers WHERE previous_territory = '52'")
                .fetch_optional(&pool)
                .await?;
        if count == 9 && moved.is_some_and(|(t,)| t.as_deref() == Some("75")) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the histories were not projected ({count} events)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let legrand_id = person_of(NIR_LEGRAND).await?.expect("Legrand");
    let fontaine_id = person_of(NIR_FONTAINE).await?.expect("Fontaine");
    let bernard_id = person_of(NIR_BERNARD).await?.expect("Bernard");

    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", hub.running.http_addr),
        hub_config: hub.config.clone(),
        key: hub.credentials_dir.join("oidc-dev-key.der"),
    };
    let all = ["diagnostic", "droits_rsa", "emploi", "engagements", "identite", "parcours"];

    // The département's chargé d'orientation, own territory: all but the diagnostic (no consent).
    let cd52 = client.dossier("cd52.orientation", legrand_id, "orientation").await?;
    assert_eq!(cd52.status, 200, "{}", cd52.body);
    assert_eq!(sections(&cd52), names(&["droits_rsa", "emploi", "engagements", "identite", "parcours"]));
    assert_eq!(withheld(&cd52), pairs(&[("diagnostic", "consentement")]));
    let identity = &cd52.body["sections"]["identite"];
    assert_eq!((identity["nom"].as_str(), identity["prenoms"].as_str()), (Some("LEGRAND"), Some("Aurélie")));
    assert_eq!(identity["date_naissance"], json!("1985-07-12"));
    assert_eq!(identity["nir_masque"], json!("*********1003"));
    assert_eq!(cd52.body["sections"]["parcours"]["referent"]["uid"], json!("agent-cd52-0042"));
    assert_eq!(
        cd52.body["sections"]["parcours"]["historique_orientation"][0]["type"],
        json!("SOCIO_PRO"),
        "{}",
        cd52.body["sections"]["parcours"]
    );
    let (outcome, purpose, shown, hidden) = journal_row(&pool, cd52.request_id).await?;
    assert_eq!((outcome.as_str(), purpose.as_deref()), ("shown", Some("orientation")));
    assert_eq!(shown.len(), 5);
    assert_eq!(hidden, json!([{"section": "diagnostic", "motif": "consentement"}]));

    // Another département: exactly the answer of a person who does not exist.
    let other = client.dossier("cd75.orientation", legrand_id, "orientation").await?;
    let nobody = client.dossier("cd75.orientation", Uuid::now_v7(), "orientation").await?;
    assert_eq!((other.status, nobody.status), (404, 404));
    assert_eq!(other.body, nobody.body, "out of reach answers like nobody");
    assert_eq!(journal_row(&pool, other.request_id).await?.0, "not_found");

    // The référent (a structure's agent): the whole dossier, for accompaniment.
    let referent = client.dossier("agent-cd52-0042", legrand_id, "accompagnement").await?;
    assert_eq!(referent.status, 200, "{}", referent.body);
    assert_eq!(sections(&referent), names(&all));
    assert!(withheld(&referent).is_empty());
    // Another structure's agent: nothing.
    assert_eq!(client.dossier("structure.autre", legrand_id, "accompagnement").await?.status, 404);

    // The CAF agent, own caisse's household, instructing the right: identity and rights only.
    let caf_agent = client.dossier("caf521.agent", legrand_id, "instruction_rsa").await?;
    assert_eq!(caf_agent.status, 200, "{}", caf_agent.body);
    // Of the engagements, the sanctions only: the caisse applies them.
    assert_eq!(sections(&caf_agent), names(&["droits_rsa", "engagements", "identite"]));
    assert_eq!(caf_agent.body["sections"]["engagements"], json!({"sanctions": []}));
    assert_eq!(
        withheld(&caf_agent),
        pairs(&[("diagnostic", "motif_acces"), ("emploi", "motif_acces"), ("parcours", "motif_acces")])
    );
    // The CAF agent cannot read for orientation, whoever the person.
    let wrong_purpose = client.dossier("caf521.agent", legrand_id, "orientation").await?;
    let wrong_purpose_nobody = client.dossier("caf521.agent", Uuid::now_v7(), "orientation").await?;
    assert_eq!((wrong_purpose.status, wrong_purpose_nobody.status), (403, 403));
    assert_eq!(wrong_purpose.body, wrong_purpose_nobody.body);
    assert_eq!(journal_row(&pool, wrong_purpose.request_id).await?.0, "refused:motif_acces");

    // The France Travail conseiller: the RSA section reduced to the SDD flag and the right state.
    let conseiller = client.dossier("ft52.conseiller", legrand_id, "accompagnement").await?;
    assert_eq!(conseiller.status, 200, "{}", conseiller.body);
    assert_eq!(sections(&conseiller), names(&["droits_rsa", "emploi", "engagements", "identite", "parcours"]));
    assert_eq!(withheld(&conseiller), pairs(&[("diagnostic", "consentement")]));
    let mut rights: Vec<&String> =
        conseiller.body["sections"]["droits_rsa"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
    rights.sort();
    assert_eq!(rights, ["etat_droit", "soumis_droits_devoirs"]);

    // Opposition: France Travail keeps its emploi data, loses the parcours; the département the
    // reverse; identity and rights stay.
    let ft_opposed = client.dossier("ft52.conseiller", fontaine_id, "accompagnement").await?;
    assert_eq!(sections(&ft_opposed), names(&["droits_rsa", "emploi", "identite"]));
    assert_eq!(
        withheld(&ft_opposed),
        pairs(&[("diagnostic", "opposition"), ("engagements", "opposition"), ("parcours", "opposition")])
    );
    let cd_opposed = client.dossier("cd52.orientation", fontaine_id, "orientation").await?;
    assert_eq!(sections(&cd_opposed), names(&["droits_rsa", "engagements", "identite", "parcours"]));
    assert_eq!(withheld(&cd_opposed), pairs(&[("diagnostic", "consentement"), ("emploi", "opposition")]));

    // Moved out: the former authority sees only that, and when; the new one sees the dossier.
    let former = client.dossier("cd52.orientation", bernard_id, "orientation").await?;
    assert_eq!(former.status, 200, "{}", former.body);
    assert!(sections(&former).is_empty());
    assert_eq!(withheld(&former), all.iter().map(|s| ((*s).to_owned(), "demenagement".to_owned())).collect::<Vec<_>>());
    assert!(former.body["demenagement"]["depuis"].as_str().is_some_and(|d| d.starts_with("2026-10-15")));
    assert_eq!(journal_row(&pool, former.request_id).await?.0, "moved_out");
    let new = client.dossier("cd75.orientation", bernard_id, "orientation").await?;
    assert_eq!(new.status, 200);
    assert!(sections(&new).contains(&"droits_rsa".to_owned()));

    // The timeline follows the same rules.
    let caf_timeline = client
        .get(Some("caf521.agent"), &format!("/api/v1/dossiers/{legrand_id}/historique"), Some("instruction_rsa"))
        .await?;
    assert_eq!(caf_timeline.status, 200, "{}", caf_timeline.body);
    let events: Vec<&str> = caf_timeline.body["evenements"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(events, ["a-caf-1", "a-caf-2"], "no France Travail nor orientation events for the CAF");
    // A page at a time: the cursor carries on where the page ended, and says when it is over.
    let path = format!("/api/v1/dossiers/{legrand_id}/historique");
    let first = client.get(Some("caf521.agent"), &format!("{path}?limite=1"), Some("instruction_rsa")).await?;
    assert_eq!(first.body["evenements"].as_array().map(Vec::len), Some(1), "{}", first.body);
    let cursor = first.body["suivant"].as_str().expect("a next page").to_owned();
    assert!(!cursor.contains("a-caf"), "a cursor carries no event id");
    let second =
        client.get(Some("caf521.agent"), &format!("{path}?limite=1&curseur={cursor}"), Some("instruction_rsa")).await?;
    let paged: Vec<&str> = [&first, &second]
        .iter()
        .flat_map(|page| page.body["evenements"].as_array().into_iter().flatten())
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(paged, ["a-caf-1", "a-caf-2"], "two pages of one give the whole timeline, in order");
    assert!(second.body["suivant"].is_null(), "the last page says it is the last");
    for (query, parameter) in [("limite=0", "limite"), ("limite=501", "limite"), ("curseur=bm9wZQ", "curseur")] {
        let bad = client.get(Some("caf521.agent"), &format!("{path}?{query}"), Some("instruction_rsa")).await?;
        assert_eq!((bad.status, bad.body["parametre"].as_str()), (400, Some(parameter)), "{query}");
    }

    // Search: a NIR in the body, never in a URL; only within reach.
    let found = client.search("cd52.orientation", json!({"motif": "orientation", "nir": nir15(NIR_LEGRAND)})).await?;
    assert_eq!(found.body["resultats"], json!([{"person_id": legrand_id, "demenage": false}]));
    let not_here = client.search("cd75.orientation", json!({"motif": "orientation", "nir": NIR_LEGRAND})).await?;
    assert_eq!(not_here.body["resultats"], json!([]));
    let by_name = client
        .search("cd52.orientation", json!({"motif": "orientation", "nom": "legrand", "date_naissance": "1985-07-12"}))
        .await?;
    assert_eq!(by_name.body["resultats"], json!([{"person_id": legrand_id, "demenage": false}]));
    let by_household = client
        .search(
            "caf521.agent",
            json!({"motif": "instruction_rsa", "matricule_caf": "205599000000000", "organisme": "521"}),
        )
        .await?;
    assert_eq!(
        by_household.body["resultats"].as_array().map(Vec::len),
        Some(3),
        "the household of the three: {}",
        by_household.body
    );
    let bad = client.search("cd52.orientation", json!({"motif": "orientation", "nir": "123"})).await?;
    assert_eq!((bad.status, bad.body["parametre"].as_str()), (400, Some("nir")));
    let two = client
        .search(
            "cd52.orientation",
            json!({"motif": "orientation", "nir": NIR_LEGRAND, "id_france_travail": FT_LEGRAND}),
        )
        .await?;
    assert_eq!((two.status, two.body["parametre"].as_str()), (400, Some("criteres")));

    // Purpose, authentication.
    let no_purpose = client.get(Some("cd52.orientation"), &format!("/api/v1/dossiers/{legrand_id}"), None).await?;
    assert_eq!((no_purpose.status, no_purpose.body["parametre"].as_str()), (400, Some("X-Motif-Acces")));
    let anonymous = client.get(None, &format!("/api/v1/dossiers/{legrand_id}"), Some("orientation")).await?;
    assert_eq!(anonymous.status, 401);
    assert_eq!(journal_row(&pool, anonymous.request_id).await?.0, "unauthenticated");
    let forged = client
        .send(
            client
                .http
                .get(format!("{}/api/v1/dossiers/{legrand_id}", client.base))
                .bearer_auth("e30.e30.AAAA")
                .header("X-Motif-Acces", "orientation"),
        )
        .await?;
    assert_eq!(forged.status, 401);

    // Territory views: the département's orientation staff of that territory only.
    let indicators =
        client.get(Some("cd52.orientation"), "/api/v1/territoires/52/indicateurs", Some("orientation")).await?;
    assert_eq!(indicators.status, 200, "{}", indicators.body);
    assert_eq!(indicators.body["personnes_sdd"], json!(2));
    let queue = client
        .get(
            Some("cd52.orientation"),
            "/api/v1/territoires/52/files/sdd-non-orientes?page=1&taille=10",
            Some("orientation"),
        )
        .await?;
    assert_eq!(queue.status, 200, "{}", queue.body);
    assert_eq!(
        client.get(Some("cd75.orientation"), "/api/v1/territoires/52/indicateurs", Some("orientation")).await?.status,
        403
    );
    let bad_page = client
        .get(Some("cd52.orientation"), "/api/v1/territoires/52/files/sdd-non-orientes?page=0", Some("orientation"))
        .await?;
    assert_eq!((bad_page.status, bad_page.body["parametre"].as_str()), (400, Some("page")));

    // The gRPC face: same rules, same journal.
    {
        use passerelle_api::grpc::proto::{
            DossierRequest, HistoriqueRequest, dossier_service_client::DossierServiceClient,
        };
        let mut grpc = DossierServiceClient::new(hub.api_channel()?);
        let ask = |agent: Option<&str>, person: Uuid, motif: &str| {
            let mut request =
                tonic::Request::new(DossierRequest { person_id: person.to_string(), motif: motif.to_owned() });
            if let Some(agent) = agent {
                let bearer = format!("Bearer {}", client.token(agent));
                request.metadata_mut().insert("authorization", bearer.parse().expect("ascii"));
            }
            request
        };
        let reply = grpc.lire_dossier(ask(Some("caf521.agent"), legrand_id, "instruction_rsa")).await?;
        let request_id: Uuid =
            reply.metadata().get("x-request-id").and_then(|v| v.to_str().ok()).expect("id").parse()?;
        let reply = reply.into_inner();
        let mut shown: Vec<&String> = reply.sections.as_ref().map(|s| s.fields.keys().collect()).unwrap_or_default();
        shown.sort();
        assert_eq!(shown, ["droits_rsa", "engagements", "identite"]);
        assert_eq!(reply.sections_masquees.len(), 3);
        assert_eq!(journal_row(&pool, Some(request_id)).await?.0, "shown");
        let status = grpc
            .lire_dossier(ask(Some("cd75.orientation"), legrand_id, "orientation"))
            .await
            .expect_err("out of reach");
        assert_eq!(status.code(), tonic::Code::NotFound);
        let status = grpc.lire_dossier(ask(None, legrand_id, "orientation")).await.expect_err("no token");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status = grpc.lire_dossier(ask(Some("cd52.orientation"), legrand_id, "")).await.expect_err("no purpose");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("motif:"), "{}", status.message());
        let mut page = tonic::Request::new(HistoriqueRequest {
            person_id: legrand_id.to_string(),
            motif: "instruction_rsa".into(),
            limite: Some(1),
            curseur: None,
        });
        let bearer = format!("Bearer {}", client.token("caf521.agent"));
        page.metadata_mut().insert("authorization", bearer.parse().expect("ascii"));
        let page = grpc.lire_historique(page).await?.into_inner();
        assert_eq!(page.evenements.len(), 1);
        assert!(page.suivant.is_some(), "the gRPC timeline pages too");
    }

    // The DPO reads the journal, not dossiers; nobody else reads the journal.
    assert_eq!(client.dossier("cd52.dpo", legrand_id, "orientation").await?.status, 403);
    let journal = client.get(Some("cd52.dpo"), &format!("/api/v1/journal?person_id={legrand_id}"), None).await?;
    assert_eq!(journal.status, 200, "{}", journal.body);
    let entries = journal.body["entrees"].as_array().expect("entries");
    assert!(
        entries.iter().any(|e| e["agent_uid"] == json!("agent-cd52-0042") && e["purpose"] == json!("accompagnement"))
    );
    // The journal pages with a cursor too: pages of two give the same rows, in order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("/api/v1/journal?person_id={legrand_id}&limite=2&curseur={cursor}"),
            None => format!("/api/v1/journal?person_id={legrand_id}&limite=2"),
        };
        let page = client.get(Some("cd52.dpo"), &query, None).await?;
        assert_eq!(page.status, 200, "{}", page.body);
        let rows = page.body["entrees"].as_array().expect("entries").clone();
        assert!(rows.len() <= 2);
        paged.extend(rows.into_iter().map(|row| row["entry_id"].clone()));
        match page.body["suivant"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let whole: Vec<serde_json::Value> = entries.iter().map(|row| row["entry_id"].clone()).collect();
    assert!(whole.len() >= 3 && paged.starts_with(&whole), "paged {paged:?}, whole {whole:?}");
    assert!(entries.iter().any(|e| e["action"] == json!("recherche") && e["agent_uid"] == json!("cd52.orientation")));
    assert_eq!(
        client.get(Some("cd52.orientation"), &format!("/api/v1/journal?person_id={legrand_id}"), None).await?.status,
        403
    );
    let journal_text = journal.body.to_string();
    for needle in personal_needles() {
        assert!(!journal_text.contains(&needle), "the journal holds {needle}");
    }

    // The application's role inserts and reads the journal; it can neither change nor delete it.
    for statement in [
        "UPDATE journal.entries SET outcome = 'shown'",
        "DELETE FROM journal.entries",
        "TRUNCATE journal.entries",
        "ALTER TABLE journal.entries DROP COLUMN purpose",
    ] {
        let error = sqlx::query(statement).execute(&pool).await.expect_err(statement);
        assert!(
            error.to_string().contains("permission denied") || error.to_string().contains("must be owner"),
            "{statement}: {error}"
        );
    }
    let (purged,): (i64,) = sqlx::query_as("SELECT journal.purge_expired()").fetch_one(&pool).await?;
    assert_eq!(purged, 0, "nothing is a year old");
    hub.running.shutdown().await
}

/// A parcours fact pushed by the structure that accompanies the person.
fn parcours_event(event_id: &str, when: &str, fact: proto::parcours_event::Fact) -> proto::ParcoursEvent {
    proto::ParcoursEvent {
        event_id: event_id.into(),
        occurred_at: when.into(),
        person: legrand(),
        location: None,
        corrects_event_id: String::new(),
        fact: Some(fact),
    }
}

fn plan(action_status: &str) -> proto::parcours_event::Fact {
    proto::parcours_event::Fact::EngagementPlanSet(proto::EngagementPlanSet {
        signed_on: "2026-10-10".into(),
        revised_on: String::new(),
        weekly_hours: Some(10),
        hours_motif: "PARENT_ISOLE".into(),
        objectives: vec![
            proto::Objective { theme: "MOBILITE".into(), label: "Obtenir le permis B".into() },
            proto::Objective { theme: "SANTE".into(), label: "Reprendre un suivi médical".into() },
        ],
        actions: vec![proto::PlanActionItem {
            action_id: "act-1".into(),
            theme: "MOBILITE".into(),
            label: "Code de la route à l'auto-école sociale".into(),
            status: action_status.into(),
            date_debut: "2026-10-15".into(),
            date_fin: "2026-12-15".into(),
            prescriber_siret: "73282932000074".into(),
        }],
    })
}

/// The parcours family end to end: the structure that accompanies a person pushes the diagnostic,
/// the plan and the rendez-vous, the département a sanction; each agent reads exactly what the
/// policy says (the référent everything, the sensitive items included; the département without
/// the diagnostic it has no consent for; the caisse the sanction only, without its motif); a
/// structure that does not accompany the person, or that decides a sanction, is refused with the
/// rule; a correction and a retraction change the dossier; nothing of it is in clear on the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parcours_is_pushed_by_those_who_accompany_the_person_and_read_as_the_policy_says() -> anyhow::Result<()> {
    use passerelle_ingest::proto::{parcours_event::Fact as P, parcours_ingest_client::ParcoursIngestClient};
    let hub = TestHub::spawn().await?;
    let keys = hub.subject_keys();
    let pool = hub.running.pool.clone();
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut cd_client = OrientationIngestClient::new(hub.channel_as("cd-52").await?);
    let mut structure = ParcoursIngestClient::new(hub.channel_as("asso-insertion-52").await?);
    let mut cd_parcours = ParcoursIngestClient::new(hub.channel_as("cd-52").await?);

    // Legrand, oriented to the association with its référent; Fontaine, oriented nowhere.
    caf_client.publish(caf("p-caf-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("p-caf-2", "2026-09-20T09:00:02+02:00", fontaine(), "CJT", sdd(true))).await?;
    cd_client.publish(cd("p-cd-1", "2026-10-02T14:00:00+02:00", legrand(), orientation_decided())).await?;
    // Legrand is registered with France Travail too, which may then push for her.
    DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?)
        .publish(ft_inscription("p-ft-1", person(NIR_LEGRAND, FT_LEGRAND, "", "", "")))
        .await?;
    // Bernard, oriented in September: no diagnostic, no plan since.
    let bernard = || person(NIR_BERNARD, "", "BERNARD", "Karim", "1992-03-20");
    caf_client.publish(caf("p-caf-3", "2026-08-20T09:00:00+02:00", bernard(), "DEM", sdd(true))).await?;
    cd_client.publish(cd("p-cd-2", "2026-09-01T14:00:00+02:00", bernard(), orientation_decided())).await?;
    let legrand_key = keys.nir(&passerelle_domain::Nir::parse(NIR_LEGRAND)?).as_str().to_owned();
    let legrand_id = passerelle_e2e::eventually("Legrand oriented to the association", async || {
        let row: Option<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT d.person_id, d.referent_siret FROM subject_links l JOIN dossiers d USING (person_id)
             WHERE l.subject_key = $1",
        )
        .bind(&legrand_key)
        .fetch_optional(&pool)
        .await?;
        Ok(row.filter(|(_, siret)| siret.as_deref() == Some("73282932000074")).map(|(id, _)| id))
    })
    .await?;

    let situations = vec![
        proto::Situation {
            theme: "LOGEMENT".into(),
            label: "Difficulté à payer le loyer".into(),
            sensitive: false,
            noted_on: "2026-10-05".into(),
            noted_by: "agent-cd52-0042".into(),
        },
        proto::Situation {
            theme: "SANTE".into(),
            label: "Existence d'un dossier MDPH".into(),
            sensitive: false,
            noted_on: "2026-10-05".into(),
            noted_by: "agent-cd52-0042".into(),
        },
        proto::Situation {
            theme: "MOBILITE".into(),
            label: "Pas de véhicule, horaires décalés".into(),
            sensitive: false,
            noted_on: "2026-10-05".into(),
            noted_by: "agent-cd52-0042".into(),
        },
    ];
    let diagnostic = P::DiagnosticRecorded(proto::DiagnosticRecorded {
        dernier_emploi: "Préparatrice de commandes".into(),
        experience: String::new(),
        rome_code: "N1103".into(),
        niveau_qualification: "3".into(),
        situations,
    });
    structure.publish(parcours_event("p-diag-1", "2026-10-05T10:00:00+02:00", diagnostic)).await?;
    structure.publish(parcours_event("p-plan-1", "2026-10-10T10:00:00+02:00", plan("PREVUE"))).await?;
    let convoked = P::RendezVousConvoked(proto::RendezVousConvoked {
        rdv_id: "rdv-1".into(),
        at: "2026-10-20T09:30:00+02:00".into(),
        structure_siret: "73282932000074".into(),
        objet: "ACCOMPAGNEMENT".into(),
    });
    structure.publish(parcours_event("p-rdv-1", "2026-10-12T10:00:00+02:00", convoked)).await?;
    let missed = P::RendezVousMissed(proto::RendezVousMissed { rdv_id: "rdv-1".into(), excused: false });
    structure.publish(parcours_event("p-rdv-2", "2026-10-20T11:00:00+02:00", missed)).await?;

    // The attacker's side: a person the structure does not accompany, whatever it writes in the
    // event; a sanction, which only the authority decides.
    let mut not_ours = parcours_event("p-x-1", "2026-10-12T10:00:00+02:00", plan("PREVUE"));
    not_ours.person = fontaine();
    not_ours.location = Some(Location { receiving_authority: "052".into(), commune: "52121".into() });
    let refused = structure.publish(not_ours).await.expect_err("not accompanied");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("rule structure.accompanies"), "{}", refused.message());
    // In force from today, for two months.
    let today = chrono::Utc::now().date_naive().to_string();
    let sanction = |id: &str| {
        P::SanctionDecided(proto::SanctionDecided {
            sanction_id: id.into(),
            share_percent: 30,
            duration_months: 2,
            date_debut: today.clone(),
            motif: "Absences répétées sans motif aux rendez-vous".into(),
        })
    };
    let refused =
        structure.publish(parcours_event("p-x-2", "2026-10-25T10:00:00+02:00", sanction("s-x"))).await.expect_err("");
    assert!(refused.message().contains("rule sanction.authority"), "{}", refused.message());
    // Invalid content is refused with its field, nothing published.
    let mut bad = parcours_event("p-x-3", "2026-10-12T10:00:00+02:00", plan("FINIE"));
    if let Some(P::EngagementPlanSet(plan)) = &mut bad.fact {
        plan.hours_motif.clear();
    }
    let refused = structure.publish(bad).await.expect_err("invalid");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    for field in ["engagement_plan_set.actions[0].status", "engagement_plan_set.hours_motif"] {
        assert!(refused.message().contains(field), "{field} in {}", refused.message());
    }
    cd_parcours.publish(parcours_event("p-cd-s1", "2026-10-25T10:00:00+02:00", sanction("s-1"))).await?;

    passerelle_e2e::eventually("the parcours facts projected", async || {
        let (count,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM person_events WHERE family = 'parcours'").fetch_one(&pool).await?;
        Ok((count == 5).then_some(()))
    })
    .await?;
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", hub.running.http_addr),
        hub_config: hub.config.clone(),
        key: hub.credentials_dir.join("oidc-dev-key.der"),
    };

    // The référent: everything, the health items included.
    let referent = client.dossier("agent-cd52-0042", legrand_id, "accompagnement").await?;
    assert_eq!(referent.status, 200, "{}", referent.body);
    let diagnostic = &referent.body["sections"]["diagnostic"]["diagnostic"];
    assert_eq!(diagnostic["metier_recherche_rome"], json!("N1103"));
    assert_eq!(diagnostic["dernier_emploi"], json!("Préparatrice de commandes"));
    let labels: Vec<(&str, bool, bool)> = diagnostic["situations"]
        .as_array()
        .expect("situations")
        .iter()
        .map(|s| (s["libelle"].as_str().unwrap_or(""), s["sensible"] == json!(true), s["referentiel"] == json!(true)))
        .collect();
    assert_eq!(
        labels,
        [
            ("Difficulté à payer le loyer", false, true),
            ("Existence d'un dossier MDPH", true, true),
            ("Pas de véhicule, horaires décalés", false, false)
        ]
    );
    let engagements = &referent.body["sections"]["engagements"];
    assert_eq!(engagements["plan"]["heures_hebdomadaires"], json!(10));
    assert_eq!(engagements["plan"]["motif_heures"], json!("PARENT_ISOLE"));
    assert_eq!(engagements["plan"]["objectifs"].as_array().map(Vec::len), Some(2));
    assert_eq!(engagements["plan"]["actions"][0]["statut"], json!("PREVUE"));
    assert_eq!(engagements["rendez_vous"][0]["statut"], json!("manque_non_excuse"));
    assert_eq!(engagements["sanctions"][0]["motif"], json!("Absences répétées sans motif aux rendez-vous"));
    assert_eq!(engagements["elements_sensibles_masques"], json!(0));

    // The département: the plan without the health objective; no diagnostic without consent.
    let cd52 = client.dossier("cd52.orientation", legrand_id, "orientation").await?;
    assert_eq!(withheld(&cd52), pairs(&[("diagnostic", "consentement")]));
    let engagements = &cd52.body["sections"]["engagements"];
    assert_eq!(engagements["plan"]["objectifs"].as_array().map(Vec::len), Some(1), "{engagements}");
    assert_eq!(engagements["elements_sensibles_masques"], json!(1));
    assert_eq!(engagements["sanctions"][0]["part_suspendue_pct"], json!(30));

    // The caisse: the sanction it applies, its share and months, not the département's words.
    let caf_agent = client.dossier("caf521.agent", legrand_id, "instruction_rsa").await?;
    let engagements = &caf_agent.body["sections"]["engagements"];
    assert_eq!(engagements.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()), Some(vec!["sanctions".into()]));
    assert_eq!(engagements["sanctions"][0]["duree_mois"], json!(2));
    assert_eq!(engagements["sanctions"][0]["motif"], Value::Null);
    let timeline = client
        .get(Some("caf521.agent"), &format!("/api/v1/dossiers/{legrand_id}/historique"), Some("instruction_rsa"))
        .await?;
    let events: Vec<&str> = timeline.body["evenements"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["evenement"].as_str())
        .collect();
    assert_eq!(events, ["rsa.right_opened", "parcours.sanction_decided"], "the caisse's timeline");

    // Another structure's agent: nothing, as if the person did not exist.
    assert_eq!(client.dossier("structure.autre", legrand_id, "accompagnement").await?.status, 404);

    // The territory's queues and indicators follow the parcours.
    let bernard_key = keys.nir(&passerelle_domain::Nir::parse(NIR_BERNARD)?).as_str().to_owned();
    let bernard_id = passerelle_e2e::eventually("Bernard oriented", async || {
        let row: Option<(Uuid,)> = sqlx::query_as(
            "SELECT d.person_id FROM subject_links l JOIN dossiers d USING (person_id)
             WHERE l.subject_key = $1 AND d.orientation_status = 'DECIDEE'",
        )
        .bind(&bernard_key)
        .fetch_optional(&pool)
        .await?;
        Ok(row.map(|(id,)| id))
    })
    .await?;
    let queue = async |name: &str| -> anyhow::Result<Vec<Uuid>> {
        let answer = client
            .get(Some("cd52.orientation"), &format!("/api/v1/territoires/52/files/{name}"), Some("orientation"))
            .await?;
        anyhow::ensure!(answer.status == 200, "{name}: {}", answer.body);
        Ok(answer.body["elements"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["person_id"].as_str().and_then(|id| id.parse().ok()))
            .collect())
    };
    assert_eq!(queue("orientes-sans-plan").await?, [bernard_id], "oriented in September, no plan");
    assert_eq!(queue("sans-diagnostic").await?, [bernard_id]);
    assert_eq!(queue("rendez-vous-manques").await?, [legrand_id], "missed, nothing since");
    let indicators =
        client.get(Some("cd52.orientation"), "/api/v1/territoires/52/indicateurs", Some("orientation")).await?;
    let parcours = &indicators.body["parcours"];
    assert_eq!(parcours["rendez_vous_manques"], json!(1), "{parcours}");
    assert_eq!(parcours["taux_rendez_vous_manques"], json!(1.0));
    assert_eq!(parcours["sanctions_en_cours"], json!(1));
    // Both were oriented more than two months ago (1 September, 2 October); Legrand's plan was
    // signed eight days after the orientation.
    assert_eq!(parcours["orientes_depuis_2_mois"], json!(2), "{parcours}");
    assert_eq!(parcours["plan_signe_sous_2_mois"], json!(1));
    assert_eq!(parcours["part_plan_signe_sous_2_mois"], json!(0.5));
    assert_eq!(parcours["delai_orientation_plan_jours"]["mediane"], json!(8.0), "2 to 10 October");

    // A correction of the plan and a retraction of the missed rendez-vous change the dossier.
    let mut corrected = parcours_event("p-plan-2", "2026-10-10T10:00:00+02:00", plan("EN_COURS"));
    corrected.corrects_event_id = "p-plan-1".into();
    structure.publish(corrected).await?;
    let retraction = P::Retraction(proto::Retraction { retracted_event_id: "p-rdv-2".into(), reason: String::new() });
    structure.publish(parcours_event("p-rdv-3", "2026-10-21T09:00:00+02:00", retraction)).await?;
    passerelle_e2e::eventually("the correction and the retraction shown", async || {
        let read = client.dossier("agent-cd52-0042", legrand_id, "accompagnement").await?;
        let engagements = &read.body["sections"]["engagements"];
        let done = engagements["plan"]["actions"][0]["statut"] == json!("EN_COURS")
            && engagements["rendez_vous"][0]["statut"] == json!("convoque");
        Ok(done.then_some(()))
    })
    .await?;
    assert!(queue("rendez-vous-manques").await?.is_empty(), "the missed rendez-vous was retracted");

    // Every other fact, through every kind of caller: the structure moves the action on, France
    // Travail (she is registered there) declares her hours and a rendez-vous honoured at its
    // agency, the département lifts the sanction with back payment.
    passerelle_e2e::eventually("Legrand registered with France Travail", async || {
        let (status,): (Option<String>,) = sqlx::query_as("SELECT ft_status FROM dossiers WHERE person_id = $1")
            .bind(legrand_id)
            .fetch_one(&pool)
            .await?;
        Ok((status.as_deref() == Some("INSCRIT")).then_some(()))
    })
    .await?;
    let done =
        P::ActionStatusChanged(proto::ActionStatusChanged { action_id: "act-1".into(), status: "REALISEE".into() });
    structure.publish(parcours_event("p-act-1", "2026-11-02T10:00:00+02:00", done)).await?;
    let mut france_travail = ParcoursIngestClient::new(hub.channel_as("france-travail").await?);
    let hours = P::ActivityHoursDeclared(proto::ActivityHoursDeclared { month: "2026-10".into(), hours: 42 });
    france_travail.publish(parcours_event("p-ft-h1", "2026-11-03T10:00:00+02:00", hours)).await?;
    let agency = P::RendezVousConvoked(proto::RendezVousConvoked {
        rdv_id: "rdv-ft".into(),
        at: "2026-11-05T14:00:00+01:00".into(),
        structure_siret: "13000548100010".into(),
        objet: "SUIVI".into(),
    });
    france_travail.publish(parcours_event("p-ft-r1", "2026-11-01T10:00:00+02:00", agency)).await?;
    let honoured = P::RendezVousHonoured(proto::RendezVousHonoured { rdv_id: "rdv-ft".into() });
    france_travail.publish(parcours_event("p-ft-r2", "2026-11-05T15:00:00+01:00", honoured)).await?;
    let lifted = P::SanctionLifted(proto::SanctionLifted {
        sanction_id: "s-1".into(),
        date_levee: today.clone(),
        back_payment: true,
    });
    cd_parcours.publish(parcours_event("p-cd-s2", "2026-11-06T10:00:00+01:00", lifted)).await?;
    passerelle_e2e::eventually("every fact of the parcours shown to the référent", async || {
        let read = client.dossier("agent-cd52-0042", legrand_id, "accompagnement").await?;
        let engagements = &read.body["sections"]["engagements"];
        let rdv_ft = engagements["rendez_vous"].as_array().into_iter().flatten().find(|r| r["id"] == json!("rdv-ft"));
        let done = engagements["plan"]["actions"][0]["statut"] == json!("REALISEE")
            && engagements["heures_declarees"] == json!([{"mois": "2026-10", "heures": 42}])
            && rdv_ft.is_some_and(|r| r["statut"] == json!("honore"))
            && engagements["sanctions"][0]["levee"]["rappel"] == json!(true);
        Ok(done.then_some(()))
    })
    .await?;
    // France Travail's conseiller reads the plan and the hours; the caisse learns the lifting.
    let conseiller = client.dossier("ft52.conseiller", legrand_id, "accompagnement").await?;
    assert_eq!(conseiller.body["sections"]["engagements"]["heures_declarees"][0]["heures"], json!(42));
    let caf_agent = client.dossier("caf521.agent", legrand_id, "instruction_rsa").await?;
    let sanction = &caf_agent.body["sections"]["engagements"]["sanctions"][0];
    assert_eq!((sanction["en_cours"].clone(), sanction["levee"]["rappel"].clone()), (json!(false), json!(true)));

    use futures::TryStreamExt as _;
    // A long parcours does not push the person's identity out of the identity section: 60
    // months of hours after every fact that named her.
    let months: Vec<proto::ParcoursEvent> = (0..60)
        .map(|index| {
            let month = format!("{}-{:02}", 2021 + index / 12, 1 + index % 12);
            let hours = P::ActivityHoursDeclared(proto::ActivityHoursDeclared { month, hours: 20 });
            // France Travail names her by her NIR alone, as its systems do.
            proto::ParcoursEvent {
                person: person(NIR_LEGRAND, "", "", "", ""),
                ..parcours_event(&format!("p-ft-h-{index}"), "2026-11-20T10:00:00+01:00", hours)
            }
        })
        .collect();
    let replies: Vec<proto::BatchReply> =
        france_travail.publish_batch(tokio_stream::iter(months)).await?.into_inner().try_collect().await?;
    assert!(replies.iter().all(|r| r.status == proto::batch_reply::Status::Accepted as i32), "{replies:?}");
    passerelle_e2e::eventually("the sixty months projected", async || {
        let read = client.dossier("agent-cd52-0042", legrand_id, "accompagnement").await?;
        let hours = read.body["sections"]["engagements"]["heures_declarees"].as_array().map(Vec::len);
        Ok((hours == Some(61)).then_some(read))
    })
    .await
    .map(|read| assert_eq!(read.body["sections"]["identite"]["nom"], json!("LEGRAND"), "{}", read.body))?;

    // On the log, the parcours travels sealed: no label, situation or motif in clear.
    let records = tokio::task::block_in_place(|| {
        passerelle_e2e::topics::read_all(
            &hub.config.kafka.bootstrap_servers,
            &hub.topic(passerelle_domain::event::Family::Parcours),
        )
    })?;
    assert!(records.len() >= 7, "{} records", records.len());
    for record in &records {
        for secret in ["MDPH", "loyer", "Préparatrice", "Absences", "permis", "N1103", "1850752121003"] {
            let found = record.value.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{secret} in clear on the parcours topic");
        }
    }
    Ok(())
}

/// The journal's group commit: the rows of concurrent requests share statements, each request
/// returns once its own row is committed, and a group that fails is written again row by row:
/// only the faulty row's request fails, no other row is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_journal_rows_share_commits_and_a_failed_group_loses_no_other_row() -> anyhow::Result<()> {
    use passerelle_api::journal::{Entry, Grouped};
    let hub = TestHub::spawn_without_projector().await?;
    let pool = hub.running.pool.clone();
    let grouped = Grouped::start(pool.clone());
    // PostgreSQL refuses a NUL character in text: the row of request 77 cannot be written.
    let entries: Vec<Entry> = (0..200)
        .map(|n| Entry {
            request_id: Uuid::new_v4(),
            action: "dossier",
            outcome: if n == 77 { "shown\0".into() } else { "shown".into() },
            ..Entry::default()
        })
        .collect();
    let written = futures::future::join_all(entries.iter().map(|entry| grouped.write(&pool, entry))).await;
    for (n, result) in written.iter().enumerate() {
        assert_eq!(result.is_err(), n == 77, "request {n}: {result:?}");
    }
    let ids: Vec<Uuid> = entries.iter().map(|entry| entry.request_id).collect();
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT request_id, count(*) FROM journal.entries WHERE request_id = ANY($1) GROUP BY request_id",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await?;
    assert_eq!(rows.len(), 199, "every other request's row is there");
    assert!(rows.iter().all(|(_, count)| *count == 1), "and once");
    assert!(!rows.iter().any(|(id, _)| *id == ids[77]));
    hub.running.shutdown().await
}
