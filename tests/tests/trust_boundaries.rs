//! The trust boundaries, attacked as a caller would: every field a caller can set is set to
//! widen its reach, and the hub's answer must come from its own state (the CAF/MSA dossier,
//! the référent fact, the habilitations file), never from the pushed field.

mod fixtures;

use std::time::{Duration, Instant};

use fixtures::*;
use passerelle_e2e::{TestHub, eventually};
use passerelle_ingest::proto::{
    self, Location, allocataire_ingest_client::AllocataireIngestClient,
    demandeur_emploi_ingest_client::DemandeurEmploiIngestClient, orientation_event::Fact as Cd,
    orientation_ingest_client::OrientationIngestClient,
};
use serde_json::Value;
use uuid::Uuid;

const NIR_PETIT: &str = "2910452121007";

/// A fact of the Ville de Paris that claims, in its location, to be Paris's.
fn from_paris(event_id: &str, when: &str, who: Option<proto::Person>, fact: Cd) -> proto::OrientationEvent {
    let mut event = cd(event_id, when, who, fact);
    event.location = Some(Location { receiving_authority: "075".into(), commune: "75056".into() });
    event
}

fn paris_referent() -> proto::Agent {
    proto::Agent { uid: "cd75.orientation".into(), email: "agent@paris.example".into(), siret: "22750000100002".into() }
}

struct Reader {
    http: reqwest::Client,
    base: String,
    hub: passerelle::config::Config,
    key: std::path::PathBuf,
}

impl Reader {
    fn token(&self, agent: &str) -> String {
        passerelle::dev_token(&self.hub, agent, &self.key, 600).expect("a development token")
    }

    /// A token of the agent `uid` of another identity provider (as ProConnect would sign it).
    fn token_of_idp(&self, uid: &str, idp: &str, siret: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = passerelle_api::auth::Claims {
            iss: self.hub.api.issuer.clone(),
            aud: self.hub.api.audience.clone(),
            sub: format!("{idp}-{uid}"),
            exp: now + 600,
            iat: now,
            uid: uid.into(),
            email: format!("{uid}@{idp}.example"),
            siret: siret.into(),
            idp_id: Some(idp.into()),
        };
        let der = std::fs::read(&self.key).expect("the development key");
        passerelle_api::auth::mint(&der, &claims).expect("a token")
    }

    async fn dossier_with(&self, token: &str, person: Uuid, purpose: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}/api/v1/dossiers/{person}", self.base))
            .bearer_auth(token)
            .header("X-Motif-Acces", purpose)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn dossier(&self, agent: &str, person: Uuid, purpose: &str) -> anyhow::Result<(u16, Value)> {
        self.dossier_with(&self.token(agent), person, purpose).await
    }

    async fn journal(&self, agent: &str) -> anyhow::Result<Vec<Value>> {
        let response =
            self.http.get(format!("{}/api/v1/journal", self.base)).bearer_auth(self.token(agent)).send().await?;
        anyhow::ensure!(response.status().as_u16() == 200, "journal: {}", response.status());
        let body: Value = response.json().await?;
        Ok(body["entrees"].as_array().cloned().unwrap_or_default())
    }
}

async fn wait_for(pool: &sqlx::PgPool, events: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM person_events").fetch_one(pool).await?;
        if count >= events {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the facts were not projected ({count} of {events} events)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn denied_rule(status: &tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    status.message().split(':').next().unwrap_or_default().trim_start_matches("rule ").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_departement_takes_over_a_person_of_another_territory_by_what_it_pushes() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let pool = hub.running.pool.clone();
    let keys = hub.subject_keys();
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    let mut paris = OrientationIngestClient::new(hub.channel_as("cd-75").await?);
    let mut haute_marne = OrientationIngestClient::new(hub.channel_as("cd-52").await?);

    // Legrand's CAF dossier is received by the Haute-Marne; the hub holds her there.
    caf_client.publish(caf("t-caf-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("t-caf-2", "2026-09-20T09:00:01+02:00", legrand(), "DEM", sdd(true))).await?;
    wait_for(&pool, 2).await?;

    // Paris pushes an orientation request and a référent of its own for her, with its own
    // code in the location: refused, naming the rule, nothing published.
    let attacks = [
        from_paris(
            "t-75-1",
            "2026-10-01T09:00:00+02:00",
            legrand(),
            Cd::OrientationRequested(proto::OrientationRequested { origine: "DEMENAGEMENT".into() }),
        ),
        from_paris(
            "t-75-2",
            "2026-10-01T09:00:01+02:00",
            legrand(),
            Cd::ReferentAssigned(proto::ReferentAssigned { referent: Some(paris_referent()) }),
        ),
        // Through a weaker identifier of hers only (the NIR left out).
        from_paris(
            "t-75-3",
            "2026-10-01T09:00:02+02:00",
            person("", FT_LEGRAND, "", "", ""),
            Cd::ConsentGiven(proto::ConsentGiven {}),
        ),
    ];
    // Her France Travail id is linked to her first (France Travail writes a Paris commune:
    // France Travail's location decides nobody's territory).
    let mut ft_fact = ft_inscription("t-ft-1", person(NIR_LEGRAND, FT_LEGRAND, "", "", ""));
    ft_fact.location = Some(Location { receiving_authority: String::new(), commune: "75056".into() });
    ft_client.publish(ft_fact).await?;
    wait_for(&pool, 3).await?;
    let mut refused = 0;
    for attack in attacks {
        let status = paris.publish(attack).await.expect_err("a takeover is refused");
        assert_eq!(denied_rule(&status), "territory.held", "{status:?}");
        refused += 1;
    }
    // And in a batch stream.
    let replies = paris
        .publish_batch(tokio_stream::iter(vec![from_paris(
            "t-75-4",
            "2026-10-01T09:00:03+02:00",
            legrand(),
            Cd::OppositionWithdrawn(proto::OppositionWithdrawn {}),
        )]))
        .await?
        .into_inner();
    let replies: Vec<proto::BatchReply> = tokio_stream::StreamExt::collect::<Result<Vec<_>, _>>(replies).await?;
    assert_eq!(replies[0].status, proto::batch_reply::Status::Denied as i32, "{:?}", replies[0]);
    assert!(replies[0].message.contains("territory.held"), "{}", replies[0].message);
    refused += 1;

    // Petit is not known to the hub yet: Paris's facts about her are accepted (nothing to
    // decide against), then her CAF dossier arrives, received by the Haute-Marne.
    let petit = || person(NIR_PETIT, "", "PETIT", "Lucie", "1991-04-17");
    paris
        .publish(from_paris(
            "t-75-5",
            "2026-09-01T09:00:00+02:00",
            petit(),
            Cd::ReferentAssigned(proto::ReferentAssigned { referent: Some(paris_referent()) }),
        ))
        .await?;
    paris
        .publish(from_paris("t-75-6", "2026-09-01T09:00:01+02:00", petit(), Cd::ConsentGiven(proto::ConsentGiven {})))
        .await?;
    let mut petit_caf = caf("t-caf-3", "2026-09-20T09:00:00+02:00", petit(), "DEM", sdd(true));
    petit_caf.household =
        Some(proto::Household { organisme: "521".into(), matricule: "3055990".into(), role: "DEM".into() });
    caf_client.publish(petit_caf).await?;
    // Her own département's référent, after.
    haute_marne
        .publish(cd(
            "t-52-1",
            "2026-10-05T09:00:00+02:00",
            petit(),
            Cd::ReferentAssigned(proto::ReferentAssigned { referent: Some(referent()) }),
        ))
        .await?;
    wait_for(&pool, 7).await?;

    let person_of = |nir: &str| {
        let key = keys.nir(&passerelle_domain::Nir::parse(nir).expect("nir")).as_str().to_owned();
        let pool = pool.clone();
        async move { passerelle_readmodel::person_of_subject(&pool, &key).await }
    };
    let legrand_id = person_of(NIR_LEGRAND).await?.expect("Legrand");
    let petit_id = person_of(NIR_PETIT).await?.expect("Petit");
    for person in [legrand_id, petit_id] {
        let dossier = passerelle_readmodel::dossier(&pool, person).await?.expect("a dossier");
        assert_eq!(dossier.territory.as_deref(), Some("52"), "only the CAF dossier decides the territory");
        assert_eq!(dossier.previous_territory, None, "nobody moved");
    }
    let petit_dossier = passerelle_readmodel::dossier(&pool, petit_id).await?.expect("a dossier");
    assert_eq!(petit_dossier.referent_uid.as_deref(), Some("agent-cd52-0042"), "Paris's référent counts for nothing");
    assert!(!petit_dossier.consent_diagnostic, "nor Paris's consent");

    let reader = Reader {
        http: reqwest::Client::new(),
        base: format!("http://{}", hub.running.http_addr),
        hub: hub.config.clone(),
        key: hub.credentials_dir.join("oidc-dev-key.der"),
    };
    // Paris's agent, named référent by Paris's own facts: not found, for any purpose.
    for person in [legrand_id, petit_id] {
        for purpose in ["orientation", "accompagnement"] {
            let (status, body) = reader.dossier("cd75.orientation", person, purpose).await?;
            assert_eq!(status, 404, "{purpose}: {body}");
        }
        // The real authority still sees its person, not "moved out".
        let (status, body) = reader.dossier("cd52.orientation", person, "orientation").await?;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("demenagement").is_none(), "{body}");
    }

    // The référent is an agent of a structure: the same uid vouched for by another identity
    // provider, for another structure, is someone else.
    let (status, _) = reader.dossier("agent-cd52-0042", petit_id, "accompagnement").await?;
    assert_eq!(status, 200, "the real référent reads the dossier they accompany");
    let impostor = reader.token_of_idp("agent-cd52-0042", "idp-autre", "35600000000006");
    let (status, body) = reader.dossier_with(&impostor, petit_id, "accompagnement").await?;
    assert_eq!(status, 404, "{body}");
    // A token claiming the référent's SIRET for the other identity provider's agent is refused
    // outright: the habilitations file decides the organisation.
    let claimed = reader.token_of_idp("agent-cd52-0042", "idp-autre", "73282932000074");
    let (status, body) = reader.dossier_with(&claimed, petit_id, "accompagnement").await?;
    assert_eq!(status, 403, "{body}");

    // DPOs read the journal of their own organisation and territory only.
    let haute_marne_dpo = reader.journal("cd52.dpo").await?;
    let paris_dpo = reader.journal("cd75.dpo").await?;
    let sirets = |rows: &[Value]| -> Vec<String> {
        rows.iter().filter_map(|row| row["agent_siret"].as_str().map(str::to_owned)).collect()
    };
    assert!(!haute_marne_dpo.is_empty() && !paris_dpo.is_empty());
    // Paris's agent read Haute-Marne persons: the Haute-Marne DPO sees those reads.
    assert!(sirets(&haute_marne_dpo).iter().any(|s| s == "22750000100002"));
    // The Haute-Marne's agents read Haute-Marne persons: the Paris DPO sees none of it.
    assert!(sirets(&paris_dpo).iter().all(|s| s == "22750000100002"), "{:?}", sirets(&paris_dpo));
    for row in &paris_dpo {
        assert!(row["agent_siret"].as_str() == Some("22750000100002"), "{row}");
    }

    eprintln!("attacks refused at ingestion: {refused}; read attempts refused: 6");
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_never_rewrites_a_fact_about_someone_else() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let pool = hub.running.pool.clone();
    let keys = hub.subject_keys();
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    caf_client.publish(caf("c-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", sdd(true))).await?;
    // The same caisse "corrects" Legrand's fact with a fact about Fontaine, and retracts it
    // from Fontaine's dossier.
    let mut correction = caf("c-2", "2026-09-21T09:00:00+02:00", fontaine(), "CJT", sdd(false));
    correction.corrects_event_id = "c-1".into();
    caf_client.publish(correction).await?;
    let mut retraction = caf(
        "c-3",
        "2026-09-22T09:00:00+02:00",
        fontaine(),
        "CJT",
        proto::allocataire_event::Fact::Retraction(proto::Retraction {
            retracted_event_id: "c-1".into(),
            reason: String::new(),
        }),
    );
    retraction.location = in_52();
    caf_client.publish(retraction).await?;
    wait_for(&pool, 3).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let key = keys.nir(&passerelle_domain::Nir::parse(NIR_LEGRAND)?).as_str().to_owned();
    let legrand_id = passerelle_readmodel::person_of_subject(&pool, &key).await?.expect("Legrand");
    let dossier = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
    assert!(dossier.sdd, "Legrand's fact stands");
    let (superseded, retracted): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT superseded_by, retracted_by FROM person_events WHERE event_id = 'c-1'")
            .fetch_one(&pool)
            .await?;
    assert_eq!((superseded, retracted), (None, None));
    hub.running.shutdown().await
}

/// Another caisse attaches Legrand's NIR to a dossier of its own while her dossier at the CAF of
/// the Haute-Marne is open: refused (`dossier.other_caisse`), she stays in the Haute-Marne. A
/// change of caisse is a mutation: once the former caisse closed her dossier, or when the new
/// caisse names the dossier it takes over, the new dossier is accepted and decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caisse_does_not_take_over_a_person_whose_dossier_another_caisse_holds_open() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let pool = hub.running.pool.clone();
    let keys = hub.subject_keys();
    let mut haute_marne = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut lyon = AllocataireIngestClient::new(hub.channel_as("caf-691").await?);
    haute_marne.publish(caf("o-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    wait_for(&pool, 1).await?;
    let in_lyon = |event_id: &str, when: &str, fact| {
        let mut event = caf(event_id, when, legrand(), "DEM", fact);
        event.household =
            Some(proto::Household { organisme: "691".into(), matricule: "7654321".into(), role: "DEM".into() });
        event.location = Some(proto::Location { receiving_authority: "069".into(), commune: "69123".into() });
        event
    };
    let mut refused = 0;
    for (event_id, fact) in [("o-2", right_opened()), ("o-3", sdd(true))] {
        let status = lyon
            .publish(in_lyon(event_id, "2026-10-01T09:00:00+02:00", fact))
            .await
            .expect_err("the CAF of Lyon takes over a person of another caisse's open dossier");
        assert_eq!(
            (status.code(), denied_rule(&status).as_str()),
            (tonic::Code::PermissionDenied, "dossier.other_caisse")
        );
        refused += 1;
    }
    let key = keys.nir(&passerelle_domain::Nir::parse(NIR_LEGRAND)?).as_str().to_owned();
    let legrand_id = passerelle_readmodel::person_of_subject(&pool, &key).await?.expect("Legrand");
    let dossier = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
    assert_eq!(dossier.territory.as_deref(), Some("52"), "she stays where her open dossier is");

    // The CAF of the Haute-Marne closes her dossier (mutation): the CAF of Lyon's dossier decides.
    haute_marne
        .publish(caf(
            "o-4",
            "2026-10-02T09:00:00+02:00",
            legrand(),
            "DEM",
            proto::allocataire_event::Fact::RightClosed(proto::RsaRightClosed {
                motif: "MUT".into(),
                date_cloture: "2026-10-01".into(),
                prior_month: false,
            }),
        ))
        .await?;
    wait_for(&pool, 2).await?;
    lyon.publish(in_lyon("o-5", "2026-10-03T09:00:00+02:00", right_opened())).await?;
    let moved = eventually("Legrand's dossier at the CAF of Lyon", async || {
        let dossier = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
        Ok(dossier.territory.as_deref().is_some_and(|t| t.starts_with("69")).then_some(dossier))
    })
    .await?;
    assert_eq!(moved.previous_territory.as_deref(), Some("52"));
    eprintln!("takeovers by another caisse refused: {refused}; the mutation accepted once the dossier closed");
    hub.running.shutdown().await
}

/// A CAF fact received by département 69 whose residence lies outside the Rhône cannot say
/// whether it is the Métropole's or the Rhône's: it is accepted and waits "à affecter", placing
/// the person nowhere (no authority reads her dossier) and deciding nothing, until the caisse's
/// correction names the authority. A former commune code lands in today's commune.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_received_by_69_outside_the_rhone_waits_for_its_authority_and_is_never_lost() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let pool = hub.running.pool.clone();
    let keys = hub.subject_keys();
    let mut lyon = AllocataireIngestClient::new(hub.channel_as("caf-691").await?);
    let in_69 = |event_id: &str, when: &str, receiving: &str, commune: &str, fact| {
        let mut event = caf(event_id, when, legrand(), "DEM", fact);
        event.household =
            Some(proto::Household { organisme: "691".into(), matricule: "7654321".into(), role: "DEM".into() });
        event.location = Some(Location { receiving_authority: receiving.into(), commune: commune.into() });
        event
    };
    // Grenoble (38185), received by 069: neither 69M nor 69D can be told.
    let reply = lyon.publish(in_69("h-1", "2026-10-01T09:00:00+02:00", "069", "38185", right_opened())).await?;
    assert_eq!(reply.into_inner().territory, "69", "the caisse learns that its fact waits");
    wait_for(&pool, 1).await?;
    let queue = passerelle_readmodel::territory::to_assign(&pool, Some("691")).await?;
    let listed: Vec<_> =
        queue.iter().map(|f| (f.source.as_str(), f.event_id.as_str(), f.commune.as_deref(), f.persons)).collect();
    assert_eq!(listed, [("caf-691", "h-1", Some("38185"), 1)]);
    assert!(passerelle_readmodel::territory::to_assign(&pool, Some("521")).await?.is_empty(), "another caisse's");
    let key = keys.nir(&passerelle_domain::Nir::parse(NIR_LEGRAND)?).as_str().to_owned();
    let legrand_id = passerelle_readmodel::person_of_subject(&pool, &key).await?.expect("the person is known");
    let held = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
    assert_eq!(
        (held.territory, held.right_state, held.household_key),
        (None, None, None),
        "placed nowhere, nothing applied while the fact waits"
    );

    // The caisse settles it: its correction names the Métropole.
    let mut correction = in_69("h-2", "2026-10-01T09:00:00+02:00", "69M", "38185", right_opened());
    correction.corrects_event_id = "h-1".into();
    assert_eq!(lyon.publish(correction).await?.into_inner().territory, "69M");
    let settled = eventually("the correction places her in the Métropole", async || {
        let dossier = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
        Ok((dossier.territory.as_deref() == Some("69M")).then_some(dossier))
    })
    .await?;
    assert_eq!(settled.right_state.as_deref(), Some("2"), "the fact now counts");
    assert!(passerelle_readmodel::territory::to_assign(&pool, None).await?.is_empty(), "the queue is empty");

    // An old flux names Pierre-Bénite's former code (69152, Oullins-Pierre-Bénite since 2024):
    // the Métropole's, settled by the commune list.
    lyon.publish(in_69("h-3", "2026-10-05T09:00:00+02:00", "069", "69152", sdd(true))).await?;
    eventually("the former commune's fact counts in the Métropole", async || {
        let dossier = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
        Ok((dossier.sdd && dossier.territory.as_deref() == Some("69M")).then_some(()))
    })
    .await?;
    assert!(passerelle_readmodel::territory::to_assign(&pool, None).await?.is_empty());

    // The caisse corrects the placed fact from its flux, still received by 069 from Grenoble:
    // the correction keeps the place of the fact it corrects, it neither waits nor erases it.
    let mut again = in_69("h-4", "2026-10-01T09:00:00+02:00", "069", "38185", sdd(true));
    again.corrects_event_id = "h-3".into();
    lyon.publish(again).await?;
    wait_for(&pool, 4).await?;
    let corrected = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
    assert_eq!((corrected.territory.as_deref(), corrected.sdd), (Some("69M"), true));
    assert!(passerelle_readmodel::territory::to_assign(&pool, None).await?.is_empty(), "nothing waits");
    hub.running.shutdown().await
}

/// A caisse that does not correct its facts: ops decide the foyer's authority, an event on its
/// own topic. The foyer's waiting facts count in that authority, a later fact of the foyer that
/// arrives waiting takes it too, a second decision moves them, and a rebuild gives the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_place_a_foyer_waiting_for_its_authority_and_a_rebuild_agrees() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let pool = hub.running.pool.clone();
    let keys = hub.subject_keys();
    let mut lyon = AllocataireIngestClient::new(hub.channel_as("caf-691").await?);
    let waiting = |event_id: &str, when: &str, fact| {
        let mut event = caf(event_id, when, legrand(), "DEM", fact);
        event.household =
            Some(proto::Household { organisme: "691".into(), matricule: "7654321".into(), role: "DEM".into() });
        event.location = Some(Location { receiving_authority: "069".into(), commune: "38185".into() });
        event
    };
    lyon.publish(waiting("w-1", "2026-10-01T09:00:00+02:00", right_opened())).await?;
    wait_for(&pool, 1).await?;
    let queue = passerelle_readmodel::territory::to_assign(&pool, None).await?;
    let foyer = queue.first().and_then(|fact| fact.household_key.clone()).expect("the foyer waits");
    let key = keys.nir(&passerelle_domain::Nir::parse(NIR_LEGRAND)?).as_str().to_owned();
    let legrand_id = passerelle_readmodel::person_of_subject(&pool, &key).await?.expect("the person is known");
    let decide = |authority: &str| passerelle_eventlog::affectation::TerritoryAssignment {
        decision_id: Uuid::now_v7(),
        decided_at: chrono::Utc::now(),
        decided_by: "ops.dupont".into(),
        household_key: foyer.clone(),
        authority: authority.into(),
    };
    passerelle::publish_territory_assignment(&hub.config, &decide("69D")).await?;
    let placed = eventually("ops' decision places the foyer in the Rhône", async || {
        let dossier = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
        Ok((dossier.territory.as_deref() == Some("69D")).then_some(dossier))
    })
    .await?;
    assert_eq!(placed.right_state.as_deref(), Some("2"), "the waiting fact now counts");
    assert!(passerelle_readmodel::territory::to_assign(&pool, None).await?.is_empty(), "the queue is empty");

    // The caisse goes on sending the foyer received by 069 from Grenoble: placed as decided.
    lyon.publish(waiting("w-2", "2026-10-10T09:00:00+02:00", sdd(true))).await?;
    eventually("the foyer's next fact follows the decision", async || {
        let dossier = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
        Ok((dossier.sdd && dossier.territory.as_deref() == Some("69D")).then_some(()))
    })
    .await?;
    assert!(passerelle_readmodel::territory::to_assign(&pool, None).await?.is_empty());

    // A later decision moves the foyer (the first was wrong); the rebuild replays both.
    passerelle::publish_territory_assignment(&hub.config, &decide("69M")).await?;
    eventually("the second decision moves the foyer", async || {
        let dossier = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
        Ok((dossier.territory.as_deref() == Some("69M")).then_some(()))
    })
    .await?;
    let before = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier");
    let rebuilt = passerelle::rebuild_projection(&hub.config, "dossier", |_| {}).await?;
    eprintln!("rebuilt: {rebuilt:?}");
    let after = passerelle_readmodel::dossier(&pool, legrand_id).await?.expect("a dossier after the rebuild");
    assert_eq!(
        (after.territory.as_deref(), after.right_state.as_deref(), after.sdd),
        (before.territory.as_deref(), before.right_state.as_deref(), before.sdd),
        "the rebuild applies the same decisions"
    );
    assert_eq!(after.territory.as_deref(), Some("69M"));
    hub.running.shutdown().await
}

/// Every row of the hub's tables (public, readmodel, journal) whose text holds `needle`, as
/// "schema.table".
async fn rows_naming(pool: &sqlx::PgPool, needle: &str) -> anyhow::Result<Vec<String>> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema, table_name FROM information_schema.tables
         WHERE table_schema IN ('public', 'readmodel', 'journal') AND table_type = 'BASE TABLE'
           AND table_name NOT LIKE 'backup_%' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await?;
    let mut found = Vec::new();
    for (schema, table) in tables {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.{table} t WHERE strpos(t::text, $1) > 0"
        )))
        .bind(needle)
        .fetch_one(pool)
        .await?;
        if count > 0 {
            found.push(format!("{schema}.{table} ({count})"));
        }
    }
    Ok(found)
}

/// Erasure, attacked by an operator who knows the person's NIR and holds everything else: the
/// pepper, the database, the whole log, the root keys directory as it is now, and a backup of
/// the database taken before the erasure. Nothing may tell them anything about the person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_erasure_nothing_left_tells_an_operator_who_knows_the_nir_anything() -> anyhow::Result<()> {
    use passerelle_domain::{FranceTravailId, Nir, event::Family};
    let hub = TestHub::spawn().await?;
    let keys = hub.subject_keys();
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    let mut cd_client = OrientationIngestClient::new(hub.channel_as("cd-52").await?);
    caf_client.publish(caf("x-caf-1", "2026-09-01T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    ft_client.publish(ft_inscription("x-ft-1", person(NIR_LEGRAND, FT_LEGRAND, "", "", ""))).await?;
    cd_client.publish(cd("x-cd-1", "2026-10-02T14:00:00+02:00", legrand(), orientation_decided())).await?;
    caf_client.publish(caf("x-caf-2", "2026-09-01T09:00:00+02:00", fontaine(), "CJT", right_opened())).await?;
    let pool = hub.running.pool.clone();
    wait_for(&pool, 4).await?;
    let nir_key = keys.nir(&Nir::parse(NIR_LEGRAND)?);
    let ft_key = keys.france_travail(&FranceTravailId::parse(FT_LEGRAND)?);
    let legrand_id = passerelle_readmodel::person_of_subject(&pool, nir_key.as_str()).await?.expect("Legrand");
    let fontaine_key = keys.nir(&Nir::parse(NIR_FONTAINE)?);

    // A référent reads the dossier: the journal holds the read.
    let reader = Reader {
        http: reqwest::Client::new(),
        base: format!("http://{}", hub.running.http_addr),
        hub: hub.config.clone(),
        key: hub.credentials_dir.join("oidc-dev-key.der"),
    };
    let (status, body) = reader.dossier("cd52.orientation", legrand_id, "orientation").await?;
    assert_eq!(status, 200, "{body}");
    let owner = sqlx::PgPool::connect(hub.config.database_owner_url.as_deref().expect("owner url")).await?;
    let journal_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM journal.entries").fetch_one(&owner).await?;

    // The backup an operator kept from before, and what the test (not the attacker) knows of
    // the person's records: their data keys' ids.
    sqlx::query("CREATE TABLE public.backup_data_keys AS SELECT * FROM public.data_keys").execute(&owner).await?;
    sqlx::query("CREATE TABLE public.backup_key_buckets AS SELECT * FROM public.key_buckets").execute(&owner).await?;
    let roots_before = hub.credentials_dir.join("root-keys-copied-before");
    std::fs::create_dir_all(&roots_before)?;
    for entry in std::fs::read_dir(&hub.root_keys_dir)? {
        let entry = entry?;
        std::fs::copy(entry.path(), roots_before.join(entry.file_name()))?;
    }
    let legrand_key_ids: Vec<Uuid> = sqlx::query_scalar("SELECT key_id FROM data_keys WHERE subject_key = ANY($1)")
        .bind(vec![nir_key.as_str().to_owned(), ft_key.as_str().to_owned()])
        .fetch_all(&pool)
        .await?;
    assert!(!legrand_key_ids.is_empty());

    let erased = passerelle_projector::erase::erase_person(
        &pool,
        &hub.key_store(),
        legrand_id,
        passerelle_projector::erase::Reason::Request,
    )
    .await?;
    assert_eq!(erased.persons, 1);
    assert!(erased.data_keys_destroyed >= 1 && erased.buckets_rotated >= 1, "{erased:?}");

    // 1. The database: no row names the person by a key the operator can recompute from the
    // NIR with the pepper, by the id derived from it, by their NIR, or by their facts' ids.
    let mut attempts = 0;
    for needle in [
        nir_key.as_str().to_owned(),
        ft_key.as_str().to_owned(),
        legrand_id.to_string(),
        NIR_LEGRAND.to_owned(),
        "x-caf-1".to_owned(),
        "x-ft-1".to_owned(),
        "x-cd-1".to_owned(),
    ] {
        attempts += 1;
        assert_eq!(rows_naming(&owner, &needle).await?, Vec::<String>::new(), "{needle} is still in the database");
    }
    // The journal kept every read, under another id.
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM journal.entries").fetch_one(&owner).await?;
    assert!(kept >= journal_rows, "the journal lost rows ({kept} < {journal_rows})");
    assert!(erased.journal_rows >= 1, "{erased:?}");
    // The control: the one who stays is still named where expected.
    assert!(!rows_naming(&owner, fontaine_key.as_str()).await?.is_empty());

    // 2. The log: keys are random ids, values hold nothing recomputable; the person's records
    // open no more (with the hub's own key store), the others do.
    let mut on_log = 0;
    for family in Family::ALL {
        let records = tokio::task::block_in_place(|| {
            passerelle_e2e::topics::read_all(&hub.config.kafka.bootstrap_servers, &hub.topic(family))
        })?;
        for record in records {
            on_log += 1;
            let key = Uuid::parse_str(&String::from_utf8_lossy(&record.key)).expect("a Kafka key is a random id");
            for needle in [nir_key.as_str(), ft_key.as_str(), "x-caf-1", "x-ft-1", "x-cd-1", "SOCIO_PRO", "52121"] {
                assert!(!record.value.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} on the log");
            }
            let opened = hub.open_record(family, &record.value).await;
            assert_eq!(opened.is_err(), legrand_key_ids.contains(&key), "record keyed {key}: {opened:?}");
        }
    }
    assert_eq!(on_log, 4);

    // 3. The backup from before, restored, with the root keys of now: nothing unwraps.
    hub.running.shutdown().await?;
    let restore = |from: &'static str, to: &'static str| {
        let owner = owner.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE public.{to}"))).execute(&owner).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO public.{to} SELECT * FROM public.{from}")))
                .execute(&owner)
                .await?;
            anyhow::Ok(())
        }
    };
    sqlx::query("CREATE TABLE public.backup_now_data_keys AS SELECT * FROM public.data_keys").execute(&owner).await?;
    sqlx::query("CREATE TABLE public.backup_now_key_buckets AS SELECT * FROM public.key_buckets")
        .execute(&owner)
        .await?;
    restore("backup_data_keys", "data_keys").await?;
    restore("backup_key_buckets", "key_buckets").await?;
    let store_now = |dir: &std::path::Path| {
        passerelle_eventlog::shredding::KeyStore::new(
            owner.clone(),
            std::sync::Arc::new(passerelle_eventlog::shredding::RootKeys::open(dir).expect("root keys")),
        )
    };
    for key_id in &legrand_key_ids {
        attempts += 1;
        let unwrapped = store_now(&hub.root_keys_dir).key_by_id(*key_id).await;
        assert!(unwrapped.is_err(), "the backup's key {key_id} unwraps with today's root keys");
        // The control: had the root keys been backed up with the database, it would.
        assert!(store_now(&roots_before).key_by_id(*key_id).await.is_ok(), "the control unwraps");
    }
    restore("backup_now_data_keys", "data_keys").await?;
    restore("backup_now_key_buckets", "key_buckets").await?;
    // After the rotation, the others' keys still open with today's root.
    let fontaine_key_id: Uuid = sqlx::query_scalar("SELECT key_id FROM data_keys WHERE subject_key = $1")
        .bind(fontaine_key.as_str())
        .fetch_one(&owner)
        .await?;
    assert!(store_now(&hub.root_keys_dir).key_by_id(fontaine_key_id).await.is_ok());
    eprintln!("erasure: {attempts} attempts to learn about the erased person, all failed; {on_log} records on the log");
    Ok(())
}

/// An identity decision names the holder and the claimant of a key. Rejected, the key stays
/// with its holder: the decision stays readable under the holder's key, but the erased
/// claimant's name inside it, sealed under their own key, no longer opens. A rebuild does not
/// bring them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_claimant_once_erased_is_not_brought_back_by_a_rebuild() -> anyhow::Result<()> {
    use passerelle_eventlog::identity::{Decision, IdentityDecision};
    let hub = TestHub::spawn().await?;
    let pool = hub.running.pool.clone();
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    ft_client.publish(ft_inscription("r-ft-1", person(NIR_LEGRAND, FT_LEGRAND, "", "", ""))).await?;
    ft_client.publish(ft_inscription("r-ft-2", person(NIR_FONTAINE, FT_LEGRAND, "", "", ""))).await?;
    let (subject_key, holder, claimant): (String, Uuid, Uuid) = eventually("an identity conflict", async || {
        Ok(sqlx::query_as("SELECT subject_key, linked_to, claimed_for FROM identity_conflicts")
            .fetch_optional(&pool)
            .await?)
    })
    .await?;
    let id_key = |person: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT id_key FROM persons WHERE person_id = $1")
                .bind(person)
                .fetch_one(&pool)
                .await
        }
    };
    let (holder_key, claimant_key) = (id_key(holder).await?, id_key(claimant).await?);
    passerelle::publish_identity_decision(
        &hub.config,
        &IdentityDecision {
            decision_id: Uuid::now_v7(),
            decided_at: chrono::Utc::now(),
            decided_by: "ops.dupont".into(),
            subject_key: subject_key.clone(),
            holder_key: holder_key.clone(),
            claimant_key: claimant_key.clone(),
            decision: Decision::Reject,
        },
    )
    .await?;
    eventually("the decision applied", async || {
        let decisions: i64 = sqlx::query_scalar("SELECT count(*) FROM identity_decisions").fetch_one(&pool).await?;
        Ok((decisions > 0).then_some(()))
    })
    .await?;

    let erased = passerelle_projector::erase::erase_person(
        &pool,
        &hub.key_store(),
        claimant,
        passerelle_projector::erase::Reason::Request,
    )
    .await?;
    assert_eq!(erased.persons, 1);
    let rebuilt = passerelle::rebuild_projection(&hub.config, "dossier", |_| {}).await?;
    eprintln!("rebuilt: {rebuilt:?}");
    let owner = sqlx::PgPool::connect(hub.config.database_owner_url.as_deref().expect("owner url")).await?;
    assert_eq!(rows_naming(&owner, &claimant_key).await?, Vec::<String>::new(), "the claimant came back");
    assert_eq!(rows_naming(&owner, &claimant.to_string()).await?, Vec::<String>::new(), "the claimant came back");
    // The holder keeps the key, as decided before.
    assert_eq!(passerelle_readmodel::person_of_subject(&pool, &subject_key).await?, Some(holder));
    assert!(!rows_naming(&owner, &holder_key).await?.is_empty());
    hub.running.shutdown().await
}
