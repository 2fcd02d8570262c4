//! The projector turns the topics into dossiers, effectively-once: a retried event is applied
//! once, a changed one is dead-lettered, a poison record does not block its partition, and a
//! replay from the beginning changes nothing.

mod fixtures;

use std::time::Duration;

use fixtures::*;
use passerelle_domain::{FranceTravailId, Nir};
use passerelle_e2e::{TestHub, eventually};
use passerelle_ingest::proto::{
    self, allocataire_ingest_client::AllocataireIngestClient, demandeur_emploi_event::Fact as Ft,
    demandeur_emploi_ingest_client::DemandeurEmploiIngestClient, orientation_event::Fact as Cd,
    orientation_ingest_client::OrientationIngestClient,
};
use passerelle_readmodel::Dossier;
use uuid::Uuid;

async fn person_id(hub: &TestHub, subject: &str) -> anyhow::Result<Option<Uuid>> {
    Ok(passerelle_readmodel::person_of_subject(&hub.running.pool, subject).await?)
}

async fn dossier_when(hub: &TestHub, subject: &str, ready: impl Fn(&Dossier) -> bool) -> anyhow::Result<Dossier> {
    eventually("the dossier", async || {
        let Some(person_id) = person_id(hub, subject).await? else { return Ok(None) };
        Ok(passerelle_readmodel::dossier(&hub.running.pool, person_id).await?.filter(|d| ready(d)))
    })
    .await
}

async fn count(hub: &TestHub, sql: &'static str) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&hub.running.pool).await?;
    Ok(n)
}

/// The records of `family`'s topic, by event id, as a worker reads them (to apply by hand).
async fn records_by_event_id(
    hub: &TestHub,
    family: passerelle_domain::event::Family,
) -> anyhow::Result<std::collections::HashMap<String, passerelle_projector::apply::Record>> {
    let topic = hub.running.topics.topic(family);
    let mut by_id = std::collections::HashMap::new();
    for record in passerelle_e2e::topics::read_all(&hub.config.kafka.bootstrap_servers, &topic)? {
        let Some(event_id) = hub.event_id_of(family, &record.value).await else { continue };
        by_id.insert(
            event_id,
            passerelle_projector::apply::Record {
                topic: topic.clone(),
                partition: record.partition,
                offset: record.offset,
                key: Some(record.key),
                value: Some(record.value),
                timestamp_ms: None,
                traceparent: None,
            },
        );
    }
    Ok(by_id)
}

/// `applier`, stopping right before its first commit: `held` says it stopped, sending on `go`
/// lets it commit.
fn held_before_commit(
    applier: passerelle_projector::apply::Applier,
) -> (passerelle_projector::apply::Applier, tokio::sync::oneshot::Receiver<()>, tokio::sync::oneshot::Sender<()>) {
    let (held_tx, held) = tokio::sync::oneshot::channel::<()>();
    let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some((held_tx, go_rx))));
    let applier = applier.holding_before_commit(std::sync::Arc::new(move || {
        let pair = slot.lock().ok().and_then(|mut slot| slot.take());
        Box::pin(async move {
            if let Some((held_tx, go_rx)) = pair {
                held_tx.send(()).ok();
                drop(go_rx.await);
            }
        })
    }));
    (applier, held, go)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_every_family_become_one_dossier_with_its_timeline() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let keys = hub.subject_keys();
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    let mut cd_client = OrientationIngestClient::new(hub.channel_as("cd-52").await?);

    // Out of order on purpose: the orientation and the SDD flag arrive before the right opens.
    cd_client
        .publish(cd(
            "p-cd-1",
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
    caf_client.publish(caf("p-caf-2", "2026-09-20T09:00:01+02:00", legrand(), "DEM", sdd(true))).await?;
    caf_client.publish(caf("p-caf-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("p-caf-3", "2026-09-20T09:00:02+02:00", fontaine(), "CJT", sdd(true))).await?;
    // France Travail knows the person by NIR and FT id; another person by FT id only.
    ft_client.publish(ft_inscription("p-ft-1", person(NIR_LEGRAND, FT_LEGRAND, "", "", ""))).await?;
    ft_client.publish(ft_inscription("p-ft-2", person("", FT_ONLY, "", "", ""))).await?;
    cd_client
        .publish(cd(
            "p-cd-2",
            "2026-10-03T14:00:00+02:00",
            legrand(),
            Cd::OppositionRecorded(proto::OppositionRecorded {}),
        ))
        .await?;

    let legrand_key = keys.nir(&Nir::parse(NIR_LEGRAND)?);
    let dossier =
        dossier_when(&hub, legrand_key.as_str(), |d| d.opposition && d.ft_status.is_some() && d.right_state.is_some())
            .await?;
    assert_eq!(dossier.territory.as_deref(), Some("52"));
    assert!(dossier.sdd);
    assert_eq!(dossier.sdd_since.map(|t| t.to_rfc3339()).as_deref(), Some("2026-09-20T07:00:01+00:00"));
    assert_eq!(dossier.right_state.as_deref(), Some("2"));
    assert_eq!(dossier.role.as_deref(), Some("DEM"));
    assert_eq!((dossier.ft_status.as_deref(), dossier.ft_categorie.as_deref()), (Some("INSCRIT"), Some("1")));
    assert_eq!(dossier.orientation_type.as_deref(), Some("SOCIO_PRO"));
    assert_eq!(dossier.referent_uid.as_deref(), Some("agent-cd52-0042"));
    assert!(!dossier.incomplete);
    let timeline = passerelle_readmodel::timeline(&hub.running.pool, dossier.person_id).await?;
    let ids: Vec<&str> = timeline.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["p-caf-1", "p-caf-2", "p-ft-1", "p-cd-1", "p-cd-2"], "in the order things happened");

    // The conjoint shares the household's right state.
    let fontaine =
        dossier_when(&hub, keys.nir(&Nir::parse(NIR_FONTAINE)?).as_str(), |d| d.right_state.is_some()).await?;
    assert_eq!((fontaine.right_state.as_deref(), fontaine.role.as_deref()), (Some("2"), Some("CJT")));

    // The FT id links to the NIR's person; the FT-only person is another one until linked.
    assert_eq!(
        person_id(&hub, keys.france_travail(&FranceTravailId::parse(FT_LEGRAND)?).as_str()).await?,
        Some(dossier.person_id)
    );
    let ft_only_key = keys.france_travail(&FranceTravailId::parse(FT_ONLY)?);
    let ft_only = dossier_when(&hub, ft_only_key.as_str(), |d| d.ft_status.is_some()).await?;
    assert_ne!(ft_only.person_id, dossier.person_id);
    // A later event carries a NIR with that FT id: one person, whose id now derives from the
    // NIR (the stronger key); the FT-only id redirects to it.
    ft_client.publish(ft_inscription("p-ft-3", person(NIR_MSA, FT_ONLY, "", "", ""))).await?;
    let msa_key = keys.nir(&Nir::parse(NIR_MSA)?);
    let joined = eventually("the link", async || person_id(&hub, msa_key.as_str()).await).await?;
    assert_eq!(joined, passerelle_readmodel::person_id_for(msa_key.as_str()));
    assert_eq!(person_id(&hub, ft_only_key.as_str()).await?, Some(joined));
    assert_eq!(passerelle_readmodel::current_person(&hub.running.pool, ft_only.person_id).await?, Some(joined));
    // The FT id claimed by another NIR is a conflict for a human, not a silent merge; until
    // decided, the key stays with the smaller person id (a rule arrival order cannot change).
    ft_client.publish(ft_inscription("p-ft-4", person(NIR_FONTAINE, FT_ONLY, "", "", ""))).await?;
    eventually("the conflict", async || {
        Ok((count(&hub, "SELECT count(*) FROM identity_conflicts").await? == 1).then_some(()))
    })
    .await?;
    let fontaine_id = passerelle_readmodel::person_id_for(keys.nir(&Nir::parse(NIR_FONTAINE)?).as_str());
    assert_eq!(person_id(&hub, ft_only_key.as_str()).await?, Some(joined.min(fontaine_id)), "not merged");
    assert_ne!(person_id(&hub, msa_key.as_str()).await?, Some(fontaine_id));
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_is_applied_once_a_changed_one_is_dead_lettered_and_poison_does_not_block() -> anyhow::Result<()>
{
    let hub = TestHub::spawn().await?;
    let keys = hub.subject_keys();
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    caf_client.publish(caf("r-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", sdd(true))).await?;
    caf_client.publish(caf("r-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", sdd(true))).await?;

    // A record no decoder can read, straight on the topic, with the person's key.
    let legrand_key = keys.nir(&Nir::parse(NIR_LEGRAND)?);
    hub.publish_poison(passerelle_domain::event::Family::Allocataire, legrand_key.as_str()).await?;
    // The same event id with another content: a conflict.
    caf_client.publish(caf("r-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", sdd(false))).await?;
    caf_client.publish(caf("r-2", "2026-09-21T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;

    let dossier = dossier_when(&hub, legrand_key.as_str(), |d| d.right_state.is_some() && d.incomplete).await?;
    assert!(dossier.sdd, "the conflicting retry did not change the fact");
    let timeline = passerelle_readmodel::timeline(&hub.running.pool, dossier.person_id).await?;
    assert_eq!(timeline.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), ["r-1", "r-2"], "r-1 once");
    let reasons: Vec<(String,)> =
        sqlx::query_as("SELECT reason FROM dead_letters ORDER BY \"offset\"").fetch_all(&hub.running.pool).await?;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].0.starts_with("undecodable"), "{reasons:?}");
    assert!(reasons[1].0.starts_with("conflict"), "{reasons:?}");
    let dead_on_topic = tokio::task::block_in_place(|| {
        passerelle_e2e::topics::read_all(&hub.config.kafka.bootstrap_servers, &hub.running.topics.dead_letters())
    })?;
    assert_eq!(dead_on_topic.len(), 2);
    assert!(dead_on_topic.iter().all(|r| r.headers.iter().any(|(k, _)| k == "passerelle-reason")));
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_the_beginning_applies_nothing_twice() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let accepted = passerelle::demo::push(&hub.endpoint(), &hub.credentials_dir).await?;
    let applied = eventually("the demo projected", async || {
        let n = count(&hub, "SELECT count(*) FROM applied_events").await?;
        Ok((n == accepted as i64).then_some(n))
    })
    .await?;
    let snapshot = async || -> anyhow::Result<(i64, i64, i64)> {
        Ok((
            count(&hub, "SELECT count(*) FROM person_events").await?,
            count(&hub, "SELECT count(*) FROM persons").await?,
            count(&hub, "SELECT count(*) FROM dossiers WHERE sdd").await?,
        ))
    };
    let before = snapshot().await?;
    assert_eq!(before.0, applied);

    // Forget the PostgreSQL offsets and replay every record with a fresh consumer group: the
    // applied (source, event_id) pairs stop every one of them.
    let pool = hub.running.pool.clone();
    let mut replay = hub.config.clone();
    hub.running.shutdown().await?;
    replay.projector_group = "replay-from-the-beginning".into();
    sqlx::query("DELETE FROM projector_offsets").execute(&pool).await?;
    let again = passerelle::start(&replay).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let offsets = eventually("the replay", async || {
        let (n,): (i64,) = sqlx::query_as("SELECT COALESCE(sum(next_offset), 0)::bigint FROM projector_offsets")
            .fetch_one(&again.pool)
            .await?;
        Ok((n >= accepted as i64).then_some(n))
    })
    .await?;
    assert!(offsets >= accepted as i64);
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM person_events").fetch_one(&again.pool).await?;
    let (persons,): (i64,) = sqlx::query_as("SELECT count(*) FROM persons").fetch_one(&again.pool).await?;
    assert_eq!((events, persons), (before.0, before.1), "nothing applied twice");
    again.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_territory_sees_its_indicators_and_work_queues() -> anyhow::Result<()> {
    use passerelle_readmodel::territory::{Queue, indicators, queue};
    let hub = TestHub::spawn().await?;
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    let mut cd_client = OrientationIngestClient::new(hub.channel_as("cd-52").await?);
    // One household, right open; LEGRAND and FONTAINE became SDD on 1 September.
    caf_client.publish(caf("t-1", "2026-09-01T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("t-2", "2026-09-01T09:00:01+02:00", legrand(), "DEM", sdd(true))).await?;
    caf_client.publish(caf("t-3", "2026-09-01T09:00:02+02:00", fontaine(), "CJT", sdd(true))).await?;
    // LEGRAND oriented 20 days later, without a référent: FONTAINE is still waiting.
    cd_client
        .publish(cd(
            "t-4",
            "2026-09-21T09:00:01+02:00",
            legrand(),
            Cd::OrientationDecided(proto::OrientationDecided { r#type: "PRO".into(), ..Default::default() }),
        ))
        .await?;
    // FONTAINE radiated by France Travail while the household's right is open.
    ft_client
        .publish(ft(
            "t-5",
            "2026-10-15T09:00:00+02:00",
            person(NIR_FONTAINE, "", "", "", ""),
            Ft::Radiation(proto::Radiation { motif: "AB".into(), date_radiation: "2026-10-15".into() }),
        ))
        .await?;
    // VIGNERON moved from the Marne (51) to the Haute-Marne on 1 November.
    let mut before = caf("t-6", "2026-06-01T09:00:00+02:00", person(NIR_MSA, "", "", "", ""), "DEM", sdd(false));
    before.location = Some(proto::Location { receiving_authority: "051".into(), commune: String::new() });
    before.household =
        Some(proto::Household { organisme: "521".into(), matricule: "7777777".into(), role: "DEM".into() });
    let mut after = before.clone();
    after.event_id = "t-7".into();
    after.occurred_at = "2026-11-01T09:00:00+01:00".into();
    after.location = in_52();
    caf_client.publish(before).await?;
    caf_client.publish(after).await?;

    let pool = &hub.running.pool;
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")?.with_timezone(&chrono::Utc);
    let current = eventually("the projection", async || {
        let current = indicators(pool, "52").await?;
        Ok((current.persons_sdd == 2
            && current.orientations_by_type.len() == 1
            && queue(pool, "52", Queue::RecentArrivals, now, 10, 0).await?.len() == 1
            && queue(pool, "52", Queue::RadiationWithOpenRight, now, 10, 0).await?.len() == 1)
            .then_some(current))
    })
    .await?;
    assert_eq!(current.households_by_right_state, vec![("2".to_owned(), 1)]);
    assert_eq!((current.sdd_oriented, current.sdd_not_oriented), (1, 1));
    assert_eq!(current.orientations_by_type, vec![("PRO".to_owned(), 1)]);
    assert_eq!(current.orientation_delay_median_days.map(|d| d.round()), Some(20.0));
    assert_eq!(current.sdd_without_referent, 2);
    assert_eq!(current.sdd_registered_france_travail, 0);

    let keys = hub.subject_keys();
    let fontaine_id = person_id(&hub, keys.nir(&Nir::parse(NIR_FONTAINE)?).as_str()).await?;
    let legrand_id = person_id(&hub, keys.nir(&Nir::parse(NIR_LEGRAND)?).as_str()).await?;
    let waiting = queue(pool, "52", Queue::SddNotOriented, now, 10, 0).await?;
    assert_eq!(waiting.iter().map(|e| Some(e.person_id)).collect::<Vec<_>>(), vec![fontaine_id]);
    let without = queue(pool, "52", Queue::OrientedWithoutReferent, now, 10, 0).await?;
    assert_eq!(without.iter().map(|e| Some(e.person_id)).collect::<Vec<_>>(), vec![legrand_id]);
    let radiated = queue(pool, "52", Queue::RadiationWithOpenRight, now, 10, 0).await?;
    assert_eq!(radiated.iter().map(|e| Some(e.person_id)).collect::<Vec<_>>(), vec![fontaine_id]);
    let arrivals = queue(pool, "52", Queue::RecentArrivals, now, 10, 0).await?;
    let vigneron = person_id(&hub, keys.nir(&Nir::parse(NIR_MSA)?).as_str()).await?;
    assert_eq!(arrivals.iter().map(|e| Some(e.person_id)).collect::<Vec<_>>(), vec![vigneron]);
    assert!(indicators(pool, "51").await?.households_by_right_state.is_empty(), "the Marne no longer counts them");
    assert!(queue(pool, "52", Queue::SddNotOriented, now, 10, 1).await?.is_empty(), "pages");
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_leaves_every_read_model_and_a_replay_does_not_bring_them_back() -> anyhow::Result<()> {
    use passerelle_projector::erase::{Reason, erase_person, retention};
    let hub = TestHub::spawn().await?;
    let keys = hub.subject_keys();
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    caf_client.publish(caf("e-1", "2026-09-01T09:00:00+02:00", legrand(), "DEM", sdd(true))).await?;
    ft_client.publish(ft_inscription("e-2", person(NIR_LEGRAND, FT_LEGRAND, "", "", ""))).await?;
    caf_client.publish(caf("e-3", "2026-09-01T09:00:00+02:00", fontaine(), "CJT", sdd(true))).await?;
    // An old dossier, without contact for more than two years.
    caf_client
        .publish(caf("e-4", "2023-06-01T09:00:00+02:00", person(NIR_MSA, "", "", "", ""), "DEM", sdd(false)))
        .await?;
    let legrand_key = keys.nir(&Nir::parse(NIR_LEGRAND)?);
    let erased_dossier = dossier_when(&hub, legrand_key.as_str(), |d| d.ft_status.is_some()).await?;
    dossier_when(&hub, keys.nir(&Nir::parse(NIR_MSA)?).as_str(), |_| true).await?;
    let pool = hub.running.pool.clone();
    let sealed_key: (uuid::Uuid,) = sqlx::query_as("SELECT key_id FROM data_keys WHERE subject_key = $1")
        .bind(legrand_key.as_str())
        .fetch_one(&pool)
        .await?;

    let erased = erase_person(&pool, &hub.key_store(), erased_dossier.person_id, Reason::Request).await?;
    assert_eq!((erased.persons, erased.subject_keys, erased.events_removed), (1, 2, 2));
    assert!(erased.data_keys_destroyed >= 1);
    assert!(matches!(hub.key_store().key_by_id(sealed_key.0).await, Err(passerelle_eventlog::Error::Shredded)));
    assert_eq!(person_id(&hub, legrand_key.as_str()).await?, None);
    assert!(passerelle_readmodel::dossier(&pool, erased_dossier.person_id).await?.is_none());
    assert!(passerelle_readmodel::timeline(&pool, erased_dossier.person_id).await?.is_empty());

    // The retention job erases the dossier without contact for two years, and only it.
    let cutoff = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")?.with_timezone(&chrono::Utc)
        - chrono::Duration::days(730);
    assert_eq!(retention(&pool, &hub.key_store(), cutoff).await?, 1);
    assert_eq!(person_id(&hub, keys.nir(&Nir::parse(NIR_MSA)?).as_str()).await?, None);
    assert!(person_id(&hub, keys.nir(&Nir::parse(NIR_FONTAINE)?).as_str()).await?.is_some(), "others stay");

    // Replay everything with a fresh group and no offsets: the erased stay erased.
    let mut replay = hub.config.clone();
    hub.running.shutdown().await?;
    replay.projector_group = "replay-after-erasure".into();
    sqlx::query("DELETE FROM projector_offsets").execute(&pool).await?;
    sqlx::query("DELETE FROM applied_events").execute(&pool).await?;
    let again = passerelle::start(&replay).await?;
    eventually("the replay", async || {
        let (n,): (i64,) = sqlx::query_as("SELECT COALESCE(sum(next_offset), 0)::bigint FROM projector_offsets")
            .fetch_one(&pool)
            .await?;
        Ok((n >= 4).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(passerelle_readmodel::person_of_subject(&pool, legrand_key.as_str()).await?, None, "not brought back");
    let (persons,): (i64,) = sqlx::query_as("SELECT count(*) FROM persons").fetch_one(&pool).await?;
    assert_eq!(persons, 1, "only FONTAINE");

    // A fact that happens after the erasure (a new demand) starts a new dossier.
    let mut caf_again = AllocataireIngestClient::new(
        passerelle_ingest::client::connect(
            &format!("https://localhost:{}", again.grpc_addr.port()),
            &passerelle_ingest::client::Credentials::from_dir(&hub.credentials_dir, "caf-521")
                .map_err(anyhow::Error::msg)?,
        )
        .await?,
    );
    let now = chrono::Utc::now().to_rfc3339();
    caf_again.publish(caf("e-5", &now, legrand(), "DEM", sdd(true))).await?;
    let fresh = eventually("the new dossier", async || {
        passerelle_readmodel::person_of_subject(&pool, legrand_key.as_str()).await.map_err(Into::into)
    })
    .await?;
    // Nothing from before the erasure comes with it: only the new fact.
    let timeline = passerelle_readmodel::timeline(&pool, fresh).await?;
    assert_eq!(timeline.iter().map(|fact| fact.event_id.as_str()).collect::<Vec<_>>(), vec!["e-5"]);
    again.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_once_its_cause_is_fixed_and_the_dossier_is_complete_again() -> anyhow::Result<()> {
    use passerelle_domain::event::{Envelope, Family, InstitutionKind, Payload, Source};
    use passerelle_eventlog::{codec, framing, schemas};
    let hub = TestHub::spawn().await?;
    let keys = hub.subject_keys();
    let legrand_key = keys.nir(&Nir::parse(NIR_LEGRAND)?);
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    caf_client.publish(caf("d-1", "2026-09-01T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;

    // A producer upgraded before the registry: its records name a schema id the hub does not know.
    let now = chrono::Utc::now();
    let event = codec::LoggedEvent {
        family: Family::Allocataire,
        envelope: Envelope {
            event_id: passerelle_domain::EventId::parse("d-2")?,
            occurred_at: now,
            recorded_at: now,
            source: Source {
                institution: "caf-521".into(),
                kind: InstitutionKind::Caf,
                relayed_by: None,
                relay_file: None,
            },
            subject: legrand_key.clone(),
            linked_keys: vec![legrand_key.clone()],
            household: None,
            territory: Some("52".into()),
            commune: None,
            corrects_event_id: None,
        },
        payload: Payload::SddChanged { soumis: true },
        personal: None,
    };
    // Written in clear with version 1, as before sealing: the projector still reads those.
    let version = schemas::COMMITTED
        .iter()
        .find(|v| v.stream == schemas::Stream::Facts(Family::Allocataire) && v.version == schemas::CONTENT_VERSION)
        .copied()
        .expect("version 1");
    let datum = codec::encode(&event, &schemas::parse(&version)?)?;
    let producer: rdkafka::producer::FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &hub.config.kafka.bootstrap_servers).create()?;
    let topic = hub.topic(Family::Allocataire);
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&topic)
                .key(legrand_key.as_str())
                .payload(&framing::frame(9999, &datum)),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)?;
    let incomplete = dossier_when(&hub, legrand_key.as_str(), |d| d.incomplete).await?;
    assert!(!incomplete.sdd);
    let pool = hub.running.pool.clone();
    let letters = passerelle_projector::dlq::list(&pool, false).await?;
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("no schema with id 9999"), "{}", letters[0].reason);
    assert!(!letters[0].reason.contains(NIR_LEGRAND));

    // Replaying before the fix changes nothing; after the registry learns the schema, it applies.
    assert!(matches!(
        passerelle::replay_dead_letter(&hub.config, letters[0].dead_letter_id).await?,
        passerelle_projector::dlq::Replayed::StillFailing(_)
    ));
    sqlx::query(
        "INSERT INTO schema_registry (id, subject, version, schema, fingerprint) VALUES (9999, 'upgraded', 2, $1, 'x')",
    )
    .bind(version.text)
    .execute(&pool)
    .await?;
    assert_eq!(
        passerelle::replay_dead_letter(&hub.config, letters[0].dead_letter_id).await?,
        passerelle_projector::dlq::Replayed::Settled
    );
    let fixed = passerelle_readmodel::dossier(&pool, incomplete.person_id).await?.expect("dossier");
    assert!(fixed.sdd, "the replayed fact applied");
    assert!(!fixed.incomplete, "complete again");
    assert!(passerelle_projector::dlq::list(&pool, false).await?.is_empty());
    hub.running.shutdown().await
}

/// Two workers refold one household at once: its members' keys sit in different partitions, so
/// each worker holds one member's event. Worker A applies Legrand's right opening and holds its
/// transaction open, refolds done; worker B applies his spouse's suspension meanwhile. Without
/// locks, B folds the household without A's uncommitted event, A without B's, and the last to
/// commit wins: the household ends "opened" though it was suspended after. With them, B waits
/// for A and folds both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_refolding_one_household_at_once_lose_neither_event() -> anyhow::Result<()> {
    let hub = TestHub::spawn_without_projector().await?;
    let mut client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    client.publish(caf("race-1", "2026-09-01T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    let suspended = proto::allocataire_event::Fact::RightSuspended(proto::RsaRightSuspended {
        scope: "PAYMENT".into(),
        motif: "06".into(),
        date_suspension: "2026-09-02".into(),
    });
    client.publish(caf("race-2", "2026-09-02T09:00:00+02:00", fontaine(), "CJT", suspended)).await?;
    let by_id = records_by_event_id(&hub, passerelle_domain::event::Family::Allocataire).await?;
    let of = |event_id: &str| by_id.get(event_id).cloned().expect("the record is on the log");
    let (opening, suspension) = (of("race-1"), of("race-2"));
    let pool = hub.running.pool.clone();
    let registry = || passerelle_eventlog::registry::Registry::new(pool.clone(), hub.running.topics.clone());

    // Worker A stops right before its commit until told to go on.
    let (worker_a, held_rx, go_tx) =
        held_before_commit(passerelle::dossier_applier(registry(), hub.key_store(), &hub.running.topics));
    let a_pool = pool.clone();
    let a = tokio::spawn(async move { worker_a.replay(&a_pool, &[opening]).await });
    held_rx.await?;
    let worker_b = passerelle::dossier_applier(registry(), hub.key_store(), &hub.running.topics);
    let b_pool = pool.clone();
    let mut b = tokio::spawn(async move { worker_b.replay(&b_pool, &[suspension]).await });
    let early = tokio::time::timeout(Duration::from_secs(2), &mut b).await;
    let b_waited = early.is_err();
    go_tx.send(()).ok();
    a.await??;
    match early {
        Ok(finished) => drop(finished??),
        Err(_) => drop(b.await??),
    }
    let key = hub.subject_keys().nir(&Nir::parse(NIR_LEGRAND)?).as_str().to_owned();
    let person = passerelle_readmodel::person_of_subject(&pool, &key).await?.expect("projected");
    let dossier = passerelle_readmodel::dossier(&pool, person).await?.expect("a dossier");
    assert_eq!(
        dossier.right_state.as_deref(),
        Some("4"),
        "the household folds both events: opened on the 1st, payment suspended on the 2nd"
    );
    assert!(b_waited, "worker B waited for worker A's refold of the same household");
    hub.running.shutdown().await
}

/// The incremental fold (docs/projector.md): a fact later than everything a dossier folded goes
/// on from the stored row; a late fact and a correction fold the whole history again. Each
/// batch is applied by hand to read how it folded; the dossier is what a full fold gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_fact_folds_on_from_the_stored_dossier_and_a_late_one_or_a_correction_in_full() -> anyhow::Result<()> {
    let hub = TestHub::spawn_without_projector().await?;
    let mut client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let suspended = proto::allocataire_event::Fact::RightSuspended(proto::RsaRightSuspended {
        scope: "PAYMENT".into(),
        motif: "06".into(),
        date_suspension: "2026-09-05".into(),
    });
    client.publish(caf("inc-1", "2026-09-01T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    client.publish(caf("inc-2", "2026-09-05T09:00:00+02:00", legrand(), "DEM", suspended)).await?;
    client.publish(caf("inc-3", "2026-09-03T09:00:00+02:00", legrand(), "DEM", sdd(true))).await?;
    let mut correction = caf("inc-4", "2026-09-06T09:00:00+02:00", legrand(), "DEM", sdd(false));
    correction.corrects_event_id = "inc-3".into();
    client.publish(correction).await?;
    let by_id = records_by_event_id(&hub, passerelle_domain::event::Family::Allocataire).await?;
    let of = |event_id: &str| by_id.get(event_id).cloned().expect("the record is on the log");
    let pool = hub.running.pool.clone();
    let registry = passerelle_eventlog::registry::Registry::new(pool.clone(), hub.running.topics.clone());
    // Without the both-ways check the test suite turns on elsewhere: the path production takes.
    let applier = passerelle::dossier_applier(registry, hub.key_store(), &hub.running.topics).checking_folds(false);
    let key = hub.subject_keys().nir(&Nir::parse(NIR_LEGRAND)?).as_str().to_owned();
    let dossier = async || -> anyhow::Result<Dossier> {
        let person = passerelle_readmodel::person_of_subject(&pool, &key).await?.expect("projected");
        Ok(passerelle_readmodel::dossier(&pool, person).await?.expect("a dossier"))
    };
    use passerelle_projector::refold::Folds;

    let first = applier.replay(&pool, &[of("inc-1")]).await?;
    assert_eq!(first.folds, Folds { dossiers_full: 1, households_full: 1, ..Folds::default() }, "a first fact");
    assert_eq!(dossier().await?.right_state.as_deref(), Some("2"));

    let later = applier.replay(&pool, &[of("inc-2")]).await?;
    assert_eq!(later.folds, Folds { dossiers_on: 1, households_on: 1, ..Folds::default() }, "a later fact");
    let now = dossier().await?;
    assert_eq!((now.right_state.as_deref(), now.right_motif.as_deref()), (Some("4"), Some("06")));

    // Occurred on the 3rd, after the suspension of the 5th was folded: late for the dossier; not
    // a right fact, so the household goes on.
    let late = applier.replay(&pool, &[of("inc-3")]).await?;
    assert_eq!(late.folds, Folds { dossiers_full: 1, households_on: 1, ..Folds::default() }, "a late fact");
    let now = dossier().await?;
    assert!(now.sdd, "the late fact counts");
    assert_eq!(now.right_state.as_deref(), Some("4"), "and the later suspension still holds");

    let corrected = applier.replay(&pool, &[of("inc-4")]).await?;
    assert_eq!(corrected.folds.dossiers_full, 1, "a correction folds the history again: {:?}", corrected.folds);
    assert_eq!(corrected.folds.dossiers_on, 0);
    assert!(!dossier().await?.sdd, "the corrected fact no longer counts");
    hub.running.shutdown().await
}

/// A table that grows faster than autovacuum looks (a catch-up, a rebuild, a first ingest) is
/// analyzed by the hub (`readmodel::statistics`), so batches are planned with its real size; a
/// small change is left to autovacuum. Both tables have autovacuum off: only the hub analyzes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_analyzes_a_table_that_grew_by_half_and_leaves_small_changes_to_autovacuum() -> anyhow::Result<()> {
    let hub = TestHub::spawn_without_projector().await?;
    let owner_url = hub.config.database_owner_url.clone().expect("the test hub has an owner role");
    let owner = sqlx::PgPool::connect(&owner_url).await?;
    let mut connection = owner.acquire().await?;
    for table in ["statistics_grown", "statistics_small"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE public.{table} (n int PRIMARY KEY) WITH (autovacuum_enabled = false)"
        )))
        .execute(&mut *connection)
        .await?;
    }
    sqlx::query("INSERT INTO public.statistics_grown SELECT generate_series(1, 5000)")
        .execute(&mut *connection)
        .await?;
    sqlx::query("INSERT INTO public.statistics_small SELECT generate_series(1, 500)").execute(&mut *connection).await?;
    // The counters the hub reads are flushed at the end of this session's next statement.
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(&mut *connection).await?;
    sqlx::query("SELECT 1").execute(&mut *connection).await?;
    let analyzed = |table: &'static str| {
        let owner = owner.clone();
        async move {
            let (analyzed, tuples): (bool, f32) = sqlx::query_as(
                "SELECT s.last_analyze IS NOT NULL, c.reltuples FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                 WHERE s.schemaname = 'public' AND s.relname = $1",
            )
            .bind(table)
            .fetch_one(&owner)
            .await?;
            anyhow::Ok((analyzed, tuples))
        }
    };
    let tuples = eventually("the grown table analyzed by the hub", async || {
        let (done, tuples) = analyzed("statistics_grown").await?;
        Ok(done.then_some(tuples))
    })
    .await?;
    assert_eq!(tuples, 5000.0, "the planner knows the table's size");
    // Several rounds of the hub's keeper (every 2 s) later, the small change is still not its.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!analyzed("statistics_small").await?.0, "500 rows are left to autovacuum");
    drop(connection);
    owner.close().await;
    hub.running.shutdown().await
}

/// Two workers, one person known first by a France Travail id only: one worker stores a new fact
/// of that id (on the person the id leads to) while another applies the fact that links the id
/// to a NIR, which merges that person into the NIR's. Neither sees the other's uncommitted
/// work, so without a rule the new fact would stay with the merged person, missing from the
/// dossier the NIR opens. Whichever holds its transaction open, the fact ends with the NIR's
/// person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_stored_while_another_worker_merges_its_person_follows_the_merge() -> anyhow::Result<()> {
    merge_race(Held::TheFact).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_stored_after_another_worker_merged_its_person_unseen_follows_the_merge() -> anyhow::Result<()> {
    merge_race(Held::TheMerge).await
}

/// Which worker of [`merge_race`] holds its transaction open until the other has run.
#[derive(PartialEq)]
enum Held {
    TheFact,
    TheMerge,
}

async fn merge_race(held: Held) -> anyhow::Result<()> {
    let hub = TestHub::spawn_without_projector().await?;
    let mut client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    client.publish(ft_inscription("merge-1", person("", FT_ONLY, "", "", ""))).await?;
    client.publish(ft_inscription("merge-2", person("", FT_ONLY, "", "", ""))).await?;
    client.publish(ft_inscription("merge-3", person(NIR_MSA, FT_ONLY, "", "", ""))).await?;
    let by_id = records_by_event_id(&hub, passerelle_domain::event::Family::DemandeurEmploi).await?;
    let of = |event_id: &str| by_id.get(event_id).cloned().expect("the record is on the log");
    let pool = hub.running.pool.clone();
    let registry = || passerelle_eventlog::registry::Registry::new(pool.clone(), hub.running.topics.clone());
    let applier = || passerelle::dossier_applier(registry(), hub.key_store(), &hub.running.topics);
    applier().replay(&pool, &[of("merge-1")]).await?;

    // The first worker stops right before its commit until told to go on.
    let (first, held_rx, go_tx) = held_before_commit(applier());
    let (first_record, second_record) = match held {
        Held::TheFact => (of("merge-2"), of("merge-3")),
        Held::TheMerge => (of("merge-3"), of("merge-2")),
    };
    let first_pool = pool.clone();
    let first = tokio::spawn(async move { first.replay(&first_pool, &[first_record]).await });
    held_rx.await?;
    let second = applier();
    let second_pool = pool.clone();
    let mut second = tokio::spawn(async move { second.replay(&second_pool, &[second_record]).await });
    let early = tokio::time::timeout(Duration::from_secs(2), &mut second).await;
    go_tx.send(()).ok();
    first.await??;
    match early {
        Ok(finished) => drop(finished??),
        Err(_) => drop(second.await??),
    }
    let nir_key = hub.subject_keys().nir(&Nir::parse(NIR_MSA)?);
    let person = passerelle_readmodel::person_of_subject(&pool, nir_key.as_str()).await?.expect("projected");
    let timeline = passerelle_readmodel::timeline(&pool, person).await?;
    let mut ids: Vec<&str> = timeline.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["merge-1", "merge-2", "merge-3"], "every fact of the person is in the dossier the NIR opens");
    let dossier = passerelle_readmodel::dossier(&pool, person).await?.expect("a dossier");
    assert_eq!(dossier.ft_status.as_deref(), Some("INSCRIT"));
    hub.running.shutdown().await
}
