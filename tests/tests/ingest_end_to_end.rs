//! Events of every family pushed through gRPC, read back from the topics with a plain Kafka
//! consumer, decoded through the hub's registry: keys, payloads, order per subject, and no
//! personal data in clear anywhere.

mod fixtures;

use std::collections::HashMap;

use fixtures::*;
use futures::StreamExt;
use passerelle_domain::{
    Nir, OrientationType, Role,
    event::{Family, Payload},
};
use passerelle_e2e::{TestHub, logs, topics};
use passerelle_eventlog::{Error as EventLogError, codec::LoggedEvent, framing};
use passerelle_ingest::proto::{
    self, AllocataireEvent, Household, allocataire_event::Fact as Caf,
    allocataire_ingest_client::AllocataireIngestClient, batch_reply, demandeur_emploi_event::Fact as Ft,
    demandeur_emploi_ingest_client::DemandeurEmploiIngestClient, orientation_event::Fact as Cd,
    orientation_ingest_client::OrientationIngestClient,
};

/// Decodes a record through the hub's registry, as any Confluent-style consumer would (the
/// writer schema is the sealed record's), then opens it with its subject's data key.
async fn decode(hub: &TestHub, family: Family, value: &[u8]) -> anyhow::Result<LoggedEvent> {
    let (id, _) = framing::unframe(value)?;
    let body: serde_json::Value =
        reqwest::get(format!("{}/schemas/ids/{id}", hub.registry_url())).await?.error_for_status()?.json().await?;
    let writer = apache_avro::Schema::parse_str(body["schema"].as_str().unwrap_or_default())?;
    anyhow::ensure!(passerelle_eventlog::sealed::is_sealed(&writer), "the registry names the sealed schema");
    hub.open_record(family, value).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_every_family_reach_their_topics_keyed_by_subject_with_personal_data_sealed() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let keys = hub.subject_keys();
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut msa_client = AllocataireIngestClient::new(hub.channel_as("msa-052").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    let mut cd_client = OrientationIngestClient::new(hub.channel_as("cd-52").await?);

    // CAF, unary: three facts of one person, in order.
    let legrand_caf = [
        caf(
            "e2e-caf-1",
            "2026-09-01T09:00:00+02:00",
            legrand(),
            "DEM",
            Caf::DemandRecorded(proto::RsaDemandRecorded {
                date_demande: "2026-09-01".into(),
                numero_demande: "01024041052".into(),
            }),
        ),
        caf("e2e-caf-2", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened()),
        caf("e2e-caf-3", "2026-09-20T09:00:01+02:00", legrand(), "DEM", sdd(true)),
    ];
    for event in legrand_caf.clone() {
        caf_client.publish(event).await?;
    }
    // CAF, batch stream: the conjoint, with a NIR of 15 characters and an address.
    let mut moved = caf(
        "e2e-caf-4",
        "2026-10-01T09:00:00+02:00",
        fontaine(),
        "CJT",
        Caf::AddressChanged(proto::AddressChanged {
            address: Some(proto::Address {
                lines: vec!["1 rue des Tanneurs".into()],
                code_postal: "52000".into(),
                commune: "52121".into(),
            }),
            mutation: None,
            previous_authority: "51".into(),
        }),
    );
    moved.corrects_event_id = String::new();
    let batch = vec![caf("e2e-caf-5", "2026-09-20T09:00:02+02:00", fontaine(), "CJT", sdd(true)), moved];
    let replies: Vec<_> = caf_client.publish_batch(tokio_stream::iter(batch)).await?.into_inner().collect().await;
    for reply in &replies {
        let reply = reply.as_ref().map_err(|s| anyhow::anyhow!("{s}"))?;
        assert_eq!(reply.status, batch_reply::Status::Accepted as i32, "{reply:?}");
    }
    // MSA: the matricule is the NIR.
    let msa = AllocataireEvent {
        household: Some(Household { organisme: "052".into(), matricule: NIR_MSA.into(), role: "DEM".into() }),
        ..caf(
            "e2e-msa-1",
            "2026-09-02T09:00:00+02:00",
            person(NIR_MSA, "", "VIGNERON", "Luc", "1979-03-30"),
            "DEM",
            right_opened(),
        )
    };
    msa_client.publish(msa).await?;

    // France Travail: one person known by NIR and FT id, one by FT id only.
    ft_client
        .publish(ft(
            "e2e-ft-1",
            "2026-09-22T08:00:00+02:00",
            person(NIR_LEGRAND, FT_LEGRAND, "", "", ""),
            Ft::Inscription(proto::Inscription {
                categorie: "1".into(),
                motif: "ZZ".into(),
                date_inscription: "2026-09-22".into(),
            }),
        ))
        .await?;
    ft_client
        .publish(ft(
            "e2e-ft-2",
            "2026-09-23T08:00:00+02:00",
            person("", FT_ONLY, "", "", ""),
            Ft::AccompagnementChanged(proto::AccompagnementChanged { modalite: "renforce".into() }),
        ))
        .await?;

    // Département.
    cd_client.publish(cd("e2e-cd-1", "2026-10-02T14:00:00+02:00", legrand(), orientation_decided())).await?;
    cd_client
        .publish(cd(
            "e2e-cd-2",
            "2026-10-03T14:00:00+02:00",
            fontaine(),
            Cd::OppositionRecorded(proto::OppositionRecorded {}),
        ))
        .await?;

    let legrand_key = keys.nir(&Nir::parse(NIR_LEGRAND)?);
    let fontaine_key = keys.nir(&Nir::parse(NIR_FONTAINE)?);
    let ft_only_key = keys.france_travail(&passerelle_domain::FranceTravailId::parse(FT_ONLY)?);
    let bootstrap = hub.config.kafka.bootstrap_servers.clone();

    let mut decoded: HashMap<String, (Family, topics::Record, LoggedEvent)> = HashMap::new();
    let mut raw_records = Vec::new();
    for family in Family::ALL {
        let records = tokio::task::spawn_blocking({
            let bootstrap = bootstrap.clone();
            let topic = hub.topic(family);
            move || topics::read_all(&bootstrap, &topic)
        })
        .await??;
        for record in records {
            let event = decode(&hub, family, &record.value).await?;
            let data_key = hub.key_store().key_for_subject(&event.envelope.subject).await?;
            assert_eq!(record.key, data_key.key_id.to_string().as_bytes(), "the Kafka key is the subject's key id");
            decoded.insert(event.envelope.event_id.to_string(), (family, record.clone(), event));
            raw_records.push(record);
        }
    }
    let mut ids: Vec<_> = decoded.keys().cloned().collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "e2e-caf-1",
            "e2e-caf-2",
            "e2e-caf-3",
            "e2e-caf-4",
            "e2e-caf-5",
            "e2e-cd-1",
            "e2e-cd-2",
            "e2e-ft-1",
            "e2e-ft-2",
            "e2e-msa-1"
        ]
    );

    // Keys: the strongest identifier; the 13 and 15 character NIRs give one subject.
    assert_eq!(decoded["e2e-caf-1"].2.envelope.subject, legrand_key);
    assert_eq!(decoded["e2e-cd-2"].2.envelope.subject, fontaine_key);
    assert_eq!(decoded["e2e-caf-5"].2.envelope.subject, fontaine_key);
    assert_eq!(decoded["e2e-ft-2"].2.envelope.subject, ft_only_key);
    let ft_1 = &decoded["e2e-ft-1"].2.envelope;
    assert_eq!(ft_1.subject, legrand_key, "NIR is stronger than the France Travail id");
    assert_eq!(
        ft_1.linked_keys,
        vec![legrand_key.clone(), keys.france_travail(&passerelle_domain::FranceTravailId::parse(FT_LEGRAND)?)]
    );

    // Order per subject: one partition, offsets in the order pushed.
    let legrand_offsets: Vec<(i32, i64)> = ["e2e-caf-1", "e2e-caf-2", "e2e-caf-3"]
        .iter()
        .map(|id| (decoded[*id].1.partition, decoded[*id].1.offset))
        .collect();
    assert!(legrand_offsets.windows(2).all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1), "{legrand_offsets:?}");

    // Payloads and envelopes, normalised.
    let opened = &decoded["e2e-caf-2"].2;
    assert_eq!(opened.family, Family::Allocataire);
    assert_eq!(opened.payload, Payload::RsaRightOpened { date_ouverture: Some("2026-09-01".parse()?) });
    assert_eq!(opened.envelope.territory.as_deref(), Some("52"));
    assert_eq!(opened.envelope.commune.as_deref(), Some("52121"));
    assert_eq!(opened.envelope.source.institution, "caf-521");
    let household = opened.envelope.household.as_ref().expect("household");
    assert_eq!((household.organisme.as_str(), household.role), ("521", Some(Role::Demandeur)));
    assert_eq!(
        household.key,
        keys.household(
            &passerelle_domain::Organisme::parse("521")?,
            &passerelle_domain::Matricule::parse("205599000000000")?
        ),
        "a 7-character matricule is the same foyer as its padded form"
    );
    match &decoded["e2e-ft-1"].2.payload {
        Payload::Inscription { motif: Some(motif), .. } => {
            assert!(!motif.known && motif.code == "ZZ", "unknown motif kept raw, flagged")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        decoded["e2e-ft-2"].2.payload,
        Payload::AccompagnementChanged { modalite: passerelle_domain::Accompagnement::Renforce }
    ));
    match &decoded["e2e-cd-1"].2.payload {
        Payload::OrientationDecided { orientation_type, referent: Some(referent), .. } => {
            assert_eq!(*orientation_type, OrientationType::SocioPro);
            assert_eq!(referent.uid, "agent-cd52-0042");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(decoded["e2e-msa-1"].2.envelope.source.kind.code(), "MSA");

    // No personal data in clear: keys, headers, values, log lines.
    let logs = logs::captured();
    assert!(!logs.is_empty(), "logs were captured");
    for needle in personal_needles() {
        for record in &raw_records {
            let mut haystacks = vec![record.key.as_slice(), record.value.as_slice()];
            haystacks.extend(record.headers.iter().map(|(_, v)| v.as_slice()));
            for haystack in haystacks {
                assert!(!contains(haystack, needle.as_bytes()), "{needle:?} found in clear on the topic");
            }
            assert!(!record.headers.iter().any(|(k, _)| k.contains(&needle)));
        }
        assert!(!logs.contains(&needle), "{needle:?} found in the logs");
    }

    // The sealed personal fields open with the subject's key, until the key is destroyed.
    let store = hub.key_store();
    let opened_personal = hub.open_personal(&decoded["e2e-caf-1"].2).await?;
    assert_eq!(opened_personal.nir.as_deref(), Some(nir15(NIR_LEGRAND).as_str()));
    assert_eq!(opened_personal.nom.as_deref(), Some("LEGRAND"));
    assert_eq!(opened_personal.numero_demande.as_deref(), Some("01024041052"));
    let sealed = decoded["e2e-caf-1"].2.personal.clone().expect("personal data sealed");
    for (family, source, event_id) in [
        ("allocataire", "caf-521", "another-event"),
        ("allocataire", "caf-999", "e2e-caf-1"),
        ("orientation", "caf-521", "e2e-caf-1"),
    ] {
        let elsewhere =
            passerelle_eventlog::shredding::associated_data("personal", family, source, sealed.key_id, event_id);
        assert!(
            store.key_by_id(sealed.key_id).await?.open(&sealed, &elsewhere).is_err(),
            "a sealed blob is bound to its family, source and event ({family}, {source}, {event_id})"
        );
    }
    let msa_personal = hub.open_personal(&decoded["e2e-msa-1"].2).await?;
    assert_eq!(msa_personal.matricule.as_deref(), Some("179035212100500"));

    let mut tx = hub.running.pool.begin().await?;
    let forgotten = store.forget(&mut tx, &[legrand_key.as_str().to_owned()]).await?;
    tx.commit().await?;
    store.retire_old_roots(forgotten.root_generation)?;
    assert_eq!(forgotten.data_keys_destroyed, 1);
    for id in ["e2e-caf-1", "e2e-caf-3", "e2e-cd-1", "e2e-ft-1"] {
        let sealed = decoded[id].2.personal.clone().expect("sealed");
        assert!(
            matches!(store.key_by_id(sealed.key_id).await, Err(EventLogError::Shredded)),
            "{id} still readable after erasure"
        );
    }
    let other = decoded["e2e-caf-5"].2.personal.clone().expect("sealed");
    assert!(store.key_by_id(other.key_id).await.is_ok(), "erasing one person leaves the others readable");
    assert_eq!(
        hub.open_record(Family::Allocataire, &decoded["e2e-caf-5"].1.value).await?.envelope.subject,
        fontaine_key
    );
    assert!(
        hub.open_record(Family::Allocataire, &decoded["e2e-caf-1"].1.value).await.is_err(),
        "an erased person's record no longer opens"
    );
    hub.running.shutdown().await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluents_own_python_client_decodes_the_topics_through_the_registry() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let accepted = passerelle::demo::push(&hub.endpoint(), &hub.credentials_dir).await?;
    assert!(accepted >= 8);
    let python = std::env::var("PASSERELLE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = passerelle_e2e::repo_root().join("tests/python/confluent_decode.py");
    let expected: Vec<_> = passerelle::demo::orientation_events().into_iter().map(|e| e.event_id).collect();
    let topic = hub.topic(Family::Orientation);
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .args([&hub.config.kafka.bootstrap_servers, &hub.registry_url(), &topic, &expected.len().to_string()])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python client failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> = stdout.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    // Without the key, a record is its key id, a version and a ciphertext: nothing else.
    let store = hub.key_store();
    let subject = hub.running.topics.subject_of(passerelle_eventlog::schemas::Stream::Facts(Family::Orientation));
    let mut ids = Vec::new();
    for line in &lines {
        assert_eq!(line["fields"], serde_json::json!(["ciphertext", "content_version", "key_id", "nonce"]));
        assert_eq!(line["key"], line["key_id"], "the Kafka key is the data key's id");
        // With the key, the content opens, and the registry gives the schema of its version.
        let key_id: uuid::Uuid = line["key_id"].as_str().unwrap_or_default().parse()?;
        let sealed = passerelle_eventlog::shredding::Sealed {
            key_id,
            nonce: hex::decode(line["nonce"].as_str().unwrap_or_default())?,
            ciphertext: hex::decode(line["ciphertext"].as_str().unwrap_or_default())?,
        };
        let version = line["content_version"].as_i64().unwrap_or_default();
        let body: serde_json::Value =
            reqwest::get(format!("{}/subjects/{subject}/versions/{version}", hub.registry_url()))
                .await?
                .error_for_status()?
                .json()
                .await?;
        let content_schema = apache_avro::Schema::parse_str(body["schema"].as_str().unwrap_or_default())?;
        let record = passerelle_eventlog::sealed::SealedRecord { content_version: version as i32, sealed };
        let key = store.key_by_id(key_id).await?;
        let (content, _) = passerelle_eventlog::sealed::open(
            passerelle_eventlog::schemas::Stream::Facts(Family::Orientation),
            &record,
            &key,
        )?;
        let event = passerelle_eventlog::codec::decode(Family::Orientation, &content, &content_schema)?;
        ids.push(event.envelope.event_id.to_string());
        if event.payload.event_type() == "orientation.decided" {
            assert!(matches!(
                event.payload,
                Payload::OrientationDecided { orientation_type: OrientationType::SocioPro, .. }
            ));
            assert_eq!(event.envelope.territory.as_deref(), Some("52"));
        }
    }
    ids.sort();
    assert_eq!(ids, expected);
    hub.running.shutdown().await
}
