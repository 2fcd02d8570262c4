//! Bad input is refused with INVALID_ARGUMENT and the field paths of every violation; nothing of
//! a refused request reaches a topic. Callers outside their family are denied.

mod fixtures;

use fixtures::*;
use futures::StreamExt;
use passerelle_domain::event::Family;
use passerelle_e2e::{TestHub, topics};
use passerelle_ingest::proto::{
    self, AllocataireEvent, DemandeurEmploiEvent, OrientationEvent, allocataire_event::Fact as Caf,
    allocataire_ingest_client::AllocataireIngestClient, batch_reply, demandeur_emploi_event::Fact as Ft,
    demandeur_emploi_ingest_client::DemandeurEmploiIngestClient, orientation_event::Fact as Cd,
    orientation_ingest_client::OrientationIngestClient,
};
use tonic::Code;
use tonic_types::StatusExt;

fn good_caf(id: &str) -> AllocataireEvent {
    caf(id, "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())
}

fn good_ft(id: &str) -> DemandeurEmploiEvent {
    ft(
        id,
        "2026-09-22T08:00:00+02:00",
        person(NIR_LEGRAND, FT_LEGRAND, "", "", ""),
        Ft::Inscription(proto::Inscription {
            categorie: "1".into(),
            motif: String::new(),
            date_inscription: String::new(),
        }),
    )
}

fn good_cd(id: &str) -> OrientationEvent {
    cd(
        id,
        "2026-10-02T14:00:00+02:00",
        legrand(),
        Cd::ReferentAssigned(proto::ReferentAssigned { referent: Some(referent()) }),
    )
}

/// The field paths of an INVALID_ARGUMENT status, from its google.rpc.BadRequest.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("a google.rpc.BadRequest detail");
    bad_request.field_violations.iter().map(|v| v.field.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_field_is_refused_with_its_path_and_nothing_is_published() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);
    let mut cd_client = OrientationIngestClient::new(hub.channel_as("cd-52").await?);

    type Mutate<T> = Box<dyn Fn(&mut T)>;
    let caf_cases: Vec<(&str, Mutate<AllocataireEvent>)> = vec![
        ("event_id", Box::new(|e| e.event_id = String::new())),
        ("event_id", Box::new(|e| e.event_id = "with spaces".into())),
        ("occurred_at", Box::new(|e| e.occurred_at = "20/09/2026".into())),
        ("occurred_at", Box::new(|e| e.occurred_at = "2999-01-01T00:00:00Z".into())),
        ("corrects_event_id", Box::new(|e| e.corrects_event_id = e.event_id.clone())),
        ("person", Box::new(|e| e.person = None)),
        ("person", Box::new(|e| e.person = person("", "", "LEGRAND", "", ""))),
        ("person.nir", Box::new(|e| e.person = person("12345", "", "", "", ""))),
        (
            "person.nir",
            Box::new(|e| {
                let mut nir = nir15(NIR_LEGRAND);
                nir.replace_range(13..15, "00");
                e.person = person(&nir, "", "", "", "")
            }),
        ),
        ("person.nir", Box::new(|e| e.person = person("185072C121003", "", "", "", ""))),
        ("person.france_travail_id", Box::new(|e| e.person = person(NIR_LEGRAND, "1253359X", "", "", ""))),
        (
            "person.departement_id_code",
            Box::new(|e| {
                e.person = Some(proto::Person { departement_id: "IODAS-1".into(), ..proto::Person::default() })
            }),
        ),
        (
            "person.departement_id_code",
            Box::new(|e| {
                e.person = Some(proto::Person {
                    departement_id: "IODAS-1".into(),
                    departement_id_code: "20".into(),
                    ..proto::Person::default()
                })
            }),
        ),
        ("person.date_naissance", Box::new(|e| e.person = person(NIR_LEGRAND, "", "", "", "12/07/1985"))),
        ("person.nom", Box::new(|e| e.person = person(NIR_LEGRAND, "", &"X".repeat(201), "", ""))),
        ("household", Box::new(|e| e.household = None)),
        (
            "household.organisme",
            Box::new(|e| {
                e.household =
                    Some(proto::Household { organisme: "52A".into(), matricule: "2055990".into(), role: "DEM".into() })
            }),
        ),
        (
            "household.matricule",
            Box::new(|e| {
                e.household = Some(proto::Household {
                    organisme: "521".into(),
                    matricule: "2055990000000001".into(),
                    role: "DEM".into(),
                })
            }),
        ),
        ("household.role", Box::new(|e| e.household = caf_household("CHEF"))),
        ("location", Box::new(|e| e.location = None)),
        (
            "location.commune",
            Box::new(|e| {
                e.location = Some(proto::Location { receiving_authority: String::new(), commune: "9999".into() })
            }),
        ),
        (
            "location.receiving_authority",
            Box::new(|e| {
                e.location = Some(proto::Location { receiving_authority: "099".into(), commune: String::new() })
            }),
        ),
        (
            "location.commune",
            Box::new(|e| {
                e.location = Some(proto::Location { receiving_authority: "052".into(), commune: "52999".into() })
            }),
        ),
        ("fact", Box::new(|e| e.fact = None)),
        (
            "right_suspended.scope",
            Box::new(|e| {
                e.fact = Some(Caf::RightSuspended(proto::RsaRightSuspended {
                    scope: "BOTH".into(),
                    motif: "06".into(),
                    date_suspension: String::new(),
                }))
            }),
        ),
        (
            "right_suspended.motif",
            Box::new(|e| {
                e.fact = Some(Caf::RightSuspended(proto::RsaRightSuspended {
                    scope: "PAYMENT".into(),
                    motif: String::new(),
                    date_suspension: String::new(),
                }))
            }),
        ),
        (
            "right_closed.date_cloture",
            Box::new(|e| {
                e.fact = Some(Caf::RightClosed(proto::RsaRightClosed {
                    motif: "MUT".into(),
                    date_cloture: "2026-13-01".into(),
                    prior_month: false,
                }))
            }),
        ),
        (
            "demand_recorded.date_demande",
            Box::new(|e| e.fact = Some(Caf::DemandRecorded(proto::RsaDemandRecorded::default()))),
        ),
        (
            "household.role",
            Box::new(|e| {
                e.household = caf_household("");
                e.fact = Some(Caf::RoleSet(proto::HouseholdRoleSet {}))
            }),
        ),
        (
            "address_changed.mutation.organisme_prenant",
            Box::new(|e| {
                e.fact = Some(Caf::AddressChanged(proto::AddressChanged {
                    address: None,
                    previous_authority: String::new(),
                    mutation: Some(proto::Mutation {
                        organisme_cedant: "521".into(),
                        organisme_prenant: String::new(),
                        matricule_cedant: String::new(),
                    }),
                }))
            }),
        ),
        (
            "address_changed.address.code_postal",
            Box::new(|e| {
                e.fact = Some(Caf::AddressChanged(proto::AddressChanged {
                    address: Some(proto::Address { lines: vec![], code_postal: "5200".into(), commune: String::new() }),
                    previous_authority: String::new(),
                    mutation: None,
                }))
            }),
        ),
        (
            "retraction.retracted_event_id",
            Box::new(|e| {
                e.fact = Some(Caf::Retraction(proto::Retraction {
                    retracted_event_id: e.event_id.clone(),
                    reason: String::new(),
                }))
            }),
        ),
    ];
    for (index, (field, mutate)) in caf_cases.iter().enumerate() {
        let mut event = good_caf(&format!("bad-caf-{index}"));
        mutate(&mut event);
        let status = caf_client.publish(event).await.expect_err(field);
        let fields = violated_fields(&status);
        assert!(
            fields.iter().any(|f| f == field),
            "case {index}: expected {field}, got {fields:?} ({})",
            status.message()
        );
    }

    let ft_cases: Vec<(&str, Mutate<DemandeurEmploiEvent>)> = vec![
        (
            "inscription.categorie",
            Box::new(|e| {
                e.fact = Some(Ft::Inscription(proto::Inscription {
                    categorie: "7".into(),
                    motif: String::new(),
                    date_inscription: String::new(),
                }))
            }),
        ),
        (
            "accompagnement_changed.modalite",
            Box::new(|e| {
                e.fact = Some(Ft::AccompagnementChanged(proto::AccompagnementChanged { modalite: "INTENSIF".into() }))
            }),
        ),
        (
            "referent_assigned.email",
            Box::new(|e| {
                e.fact = Some(Ft::ReferentAssigned(proto::FtReferentAssigned {
                    nom: "X".into(),
                    email: "not-an-email".into(),
                    code_safir: String::new(),
                }))
            }),
        ),
        (
            "ppae_signed.date_signature",
            Box::new(|e| e.fact = Some(Ft::PpaeSigned(proto::PpaeSigned { date_signature: String::new() }))),
        ),
        (
            "radiation.date_radiation",
            Box::new(|e| {
                e.fact = Some(Ft::Radiation(proto::Radiation { motif: "AB".into(), date_radiation: "hier".into() }))
            }),
        ),
    ];
    for (index, (field, mutate)) in ft_cases.iter().enumerate() {
        let mut event = good_ft(&format!("bad-ft-{index}"));
        mutate(&mut event);
        let status = ft_client.publish(event).await.expect_err(field);
        let fields = violated_fields(&status);
        assert!(fields.iter().any(|f| f == field), "case {index}: expected {field}, got {fields:?}");
    }

    let cd_cases: Vec<(&str, Mutate<OrientationEvent>)> = vec![
        (
            "orientation_decided.type",
            Box::new(|e| {
                e.fact = Some(Cd::OrientationDecided(proto::OrientationDecided {
                    r#type: "SOCIOPRO".into(),
                    ..Default::default()
                }))
            }),
        ),
        (
            "orientation_decided.structure_siret",
            Box::new(|e| {
                e.fact = Some(Cd::OrientationDecided(proto::OrientationDecided {
                    r#type: "PRO".into(),
                    structure_siret: "73282932000075".into(),
                    ..Default::default()
                }))
            }),
        ),
        (
            "orientation_requested.origine",
            Box::new(|e| {
                e.fact = Some(Cd::OrientationRequested(proto::OrientationRequested { origine: "AUTRE".into() }))
            }),
        ),
        (
            "orientation_denied.reason",
            Box::new(|e| e.fact = Some(Cd::OrientationDenied(proto::OrientationDenied { reason: String::new() }))),
        ),
        (
            "referent_assigned.referent",
            Box::new(|e| e.fact = Some(Cd::ReferentAssigned(proto::ReferentAssigned { referent: None }))),
        ),
        (
            "referent_assigned.referent.siret",
            Box::new(|e| {
                e.fact = Some(Cd::ReferentAssigned(proto::ReferentAssigned {
                    referent: Some(proto::Agent { siret: "123".into(), ..referent() }),
                }))
            }),
        ),
        (
            "referent_assigned.referent.email",
            Box::new(|e| {
                e.fact = Some(Cd::ReferentAssigned(proto::ReferentAssigned {
                    referent: Some(proto::Agent { email: "nope".into(), ..referent() }),
                }))
            }),
        ),
        (
            "referent_assigned.referent.uid",
            Box::new(|e| {
                e.fact = Some(Cd::ReferentAssigned(proto::ReferentAssigned {
                    referent: Some(proto::Agent { uid: "someone@example.org".into(), ..referent() }),
                }))
            }),
        ),
        (
            "contract_signed.kind",
            Box::new(|e| {
                e.fact = Some(Cd::ContractSigned(proto::ContractSigned {
                    kind: "CDI".into(),
                    date_debut: "2026-10-01".into(),
                    date_fin: String::new(),
                }))
            }),
        ),
        (
            "contract_signed.date_fin",
            Box::new(|e| {
                e.fact = Some(Cd::ContractSigned(proto::ContractSigned {
                    kind: "CER".into(),
                    date_debut: "2026-10-01".into(),
                    date_fin: "2026-09-01".into(),
                }))
            }),
        ),
        (
            "contract_ended.date_fin",
            Box::new(|e| {
                e.fact = Some(Cd::ContractEnded(proto::ContractEnded { kind: "CER".into(), date_fin: String::new() }))
            }),
        ),
    ];
    for (index, (field, mutate)) in cd_cases.iter().enumerate() {
        let mut event = good_cd(&format!("bad-cd-{index}"));
        mutate(&mut event);
        let status = cd_client.publish(event).await.expect_err(field);
        let fields = violated_fields(&status);
        assert!(fields.iter().any(|f| f == field), "case {index}: expected {field}, got {fields:?}");
    }

    // Several violations at once: all reported.
    let mut several = good_caf("bad-several");
    several.person = person("12345", "1253359X", "", "", "1985-02-30");
    several.household = caf_household("CHEF");
    several.location = Some(proto::Location { receiving_authority: String::new(), commune: "ABCDE".into() });
    let status = caf_client.publish(several).await.expect_err("several");
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        ["household.role", "location.commune", "person.date_naissance", "person.france_travail_id", "person.nir"]
    );
    let reasons: Vec<String> = status
        .get_error_details()
        .bad_request()
        .expect("bad request")
        .field_violations
        .iter()
        .map(|v| v.reason.clone())
        .collect();
    assert!(reasons.contains(&"NIR_LENGTH".to_owned()), "{reasons:?}");

    // One valid event per family, so the topics are not trivially empty, then nothing else.
    caf_client.publish(good_caf("good-caf")).await?;
    ft_client.publish(good_ft("good-ft")).await?;
    cd_client.publish(good_cd("good-cd")).await?;
    let mut parcours_client = proto::parcours_ingest_client::ParcoursIngestClient::new(hub.channel_as("cd-52").await?);
    parcours_client
        .publish(proto::ParcoursEvent {
            event_id: "good-parcours".into(),
            occurred_at: "2026-10-03T10:00:00+02:00".into(),
            person: legrand(),
            location: None,
            corrects_event_id: String::new(),
            fact: Some(proto::parcours_event::Fact::RendezVousHonoured(proto::RendezVousHonoured {
                rdv_id: "rdv-1".into(),
            })),
        })
        .await?;
    for family in Family::ALL {
        let values = hub.event_ids_on(family).await?;
        assert_eq!(values.len(), 1, "{family:?}: only the valid event is on the topic");
        assert!(values[0].starts_with("good-"), "{family:?}");
    }
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_publishes_the_good_events_and_reports_each_bad_one() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let mut client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut bad_nir = good_caf("batch-2");
    bad_nir.person = person("1850752121", "", "", "", "");
    let mut bad_role = good_caf("batch-4");
    bad_role.household = caf_household("XX");
    let batch = vec![good_caf("batch-1"), bad_nir, good_caf("batch-3"), bad_role, good_caf("batch-5")];
    let replies: Vec<proto::BatchReply> =
        client.publish_batch(tokio_stream::iter(batch)).await?.into_inner().map(|r| r.expect("reply")).collect().await;
    let summary: Vec<(u64, String, i32)> = replies.iter().map(|r| (r.index, r.event_id.clone(), r.status)).collect();
    let accepted = batch_reply::Status::Accepted as i32;
    let invalid = batch_reply::Status::Invalid as i32;
    assert_eq!(
        summary,
        vec![
            (0, "batch-1".into(), accepted),
            (1, "batch-2".into(), invalid),
            (2, "batch-3".into(), accepted),
            (3, "batch-4".into(), invalid),
            (4, "batch-5".into(), accepted),
        ]
    );
    assert_eq!(replies[1].violations[0].field, "person.nir");
    assert_eq!(replies[3].violations[0].field, "household.role");
    let values = hub.event_ids_on(Family::Allocataire).await?;
    assert_eq!(values, ["batch-1", "batch-3", "batch-5"], "the good events, in order, nothing else");
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn institutions_publish_only_within_their_scope_over_mutual_tls() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let cd52 = hub.channel_as("cd-52").await?;
    let lyon = hub.channel_as("metropole-lyon").await?;

    // Family: a département publishes no France Travail facts, France Travail no orientation.
    let denied = DemandeurEmploiIngestClient::new(cd52.clone()).publish(good_ft("denied-1")).await.expect_err("family");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("rule family"), "{}", denied.message());
    let denied = OrientationIngestClient::new(hub.channel_as("france-travail").await?)
        .publish(good_cd("denied-2"))
        .await
        .expect_err("family");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Organisme: the CAF of the Rhône cannot publish a dossier of the Haute-Marne's caisse.
    let denied = AllocataireIngestClient::new(hub.channel_as("caf-691").await?)
        .publish(good_caf("denied-3"))
        .await
        .expect_err("organisme");
    assert!(denied.message().contains("rule organisme"), "{}", denied.message());

    // Territory: the Métropole de Lyon cannot orient a person of the Haute-Marne.
    let denied = OrientationIngestClient::new(lyon.clone()).publish(good_cd("denied-4")).await.expect_err("territory");
    assert!(denied.message().contains("rule territory"), "{}", denied.message());

    // Relay: without naming the file, a département cannot publish allocataire facts…
    let denied = AllocataireIngestClient::new(cd52.clone()).publish(good_caf("denied-5")).await.expect_err("relay");
    assert!(denied.message().contains("rule relay"), "{}", denied.message());
    // …nor relay a dossier received by another authority.
    let mut relay = tonic::Request::new(good_caf("denied-6"));
    relay.metadata_mut().insert(passerelle_ingest::auth::RELAY_FILE_HEADER, "RSABEM-2026-10.xml".parse()?);
    let denied = AllocataireIngestClient::new(lyon).publish(relay).await.expect_err("relay territory");
    assert!(denied.message().contains("rule relay.territory"), "{}", denied.message());

    // Authentication: a certificate of the right CA for an unlisted institution, and no
    // certificate at all, publish nothing.
    let unknown = AllocataireIngestClient::new(hub.channel_as("caf-999").await?)
        .publish(good_caf("denied-7"))
        .await
        .expect_err("unlisted");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let anonymous = AllocataireIngestClient::new(hub.anonymous_channel().await?).publish(good_caf("denied-8")).await;
    assert!(anonymous.is_err(), "a call without a client certificate is refused");
    for family in Family::ALL {
        assert!(hub.event_ids_on(family).await?.is_empty(), "{family:?}: nothing published");
    }

    // A relayed flux is the caisse's fact, recorded as relayed by the authority from that file.
    let mut relay = tonic::Request::new(good_caf("relayed-1"));
    relay.metadata_mut().insert(passerelle_ingest::auth::RELAY_FILE_HEADER, "RSABEM-2026-10.xml".parse()?);
    AllocataireIngestClient::new(cd52).publish(relay).await?;
    let records = tokio::task::block_in_place(|| {
        topics::read_all(&hub.config.kafka.bootstrap_servers, &hub.topic(Family::Allocataire))
    })?;
    assert_eq!(records.len(), 1);
    let event = hub.open_record(Family::Allocataire, &records[0].value).await?;
    assert_eq!(event.envelope.source.institution, "caf-521");
    assert_eq!(event.envelope.source.relayed_by.as_deref(), Some("cd-52"));
    assert_eq!(event.envelope.source.relay_file.as_deref(), Some("RSABEM-2026-10.xml"));
    hub.running.shutdown().await
}
