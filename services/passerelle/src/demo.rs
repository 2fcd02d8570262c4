//! Demo data: a few fictional households of the Haute-Marne (52) and the Métropole de Lyon,
//! pushed through the gRPC API exactly as institutions would. Event ids are fixed, so pushing
//! the demo twice adds nothing to the read models.

use anyhow::Context as _;
use std::path::Path;

use passerelle_ingest::{
    client::{Credentials, connect},
    proto::{
        self, AllocataireEvent, DemandeurEmploiEvent, Household, Location, OrientationEvent, Person,
        allocataire_event::Fact as Caf, allocataire_ingest_client::AllocataireIngestClient,
        demandeur_emploi_event::Fact as Ft, demandeur_emploi_ingest_client::DemandeurEmploiIngestClient,
        orientation_event::Fact as Cd, orientation_ingest_client::OrientationIngestClient, parcours_event::Fact as Pa,
        parcours_ingest_client::ParcoursIngestClient,
    },
};

/// A person as the API receives it (empty strings: not given).
pub fn person(nir: &str, ft: &str, nom: &str, prenoms: &str, naissance: &str) -> Option<Person> {
    Some(Person {
        nir: nir.into(),
        france_travail_id: ft.into(),
        nom: nom.into(),
        prenoms: prenoms.into(),
        date_naissance: naissance.into(),
        ..Person::default()
    })
}

fn at(authority: &str, commune: &str) -> Option<Location> {
    Some(Location { receiving_authority: authority.into(), commune: commune.into() })
}

/// The CAF's facts of the demo.
pub fn allocataire_events() -> Vec<AllocataireEvent> {
    let martin = || person("1850752121003", "", "MARTIN", "Paul", "1985-07-12");
    let durand = || person("2870552121004", "", "DURAND", "Julie", "1987-05-03");
    let foyer =
        |role: &str| Some(Household { organisme: "521".into(), matricule: "1234567".into(), role: role.into() });
    let lyon = || person("1920169381005", "", "BERNARD", "Karim", "1992-01-20");
    let event = |id: &str, when: &str, who, household, fact| AllocataireEvent {
        event_id: id.into(),
        occurred_at: when.into(),
        person: who,
        household,
        location: at("052", "52121"),
        corrects_event_id: String::new(),
        fact: Some(fact),
    };
    let mut events = vec![
        event(
            "demo-caf-0001",
            "2026-09-01T09:00:00+02:00",
            martin(),
            foyer("DEM"),
            Caf::DemandRecorded(proto::RsaDemandRecorded {
                date_demande: "2026-09-01".into(),
                numero_demande: String::new(),
            }),
        ),
        event(
            "demo-caf-0002",
            "2026-09-01T09:00:01+02:00",
            durand(),
            foyer("CJT"),
            Caf::RoleSet(proto::HouseholdRoleSet {}),
        ),
        event(
            "demo-caf-0003",
            "2026-09-20T10:00:00+02:00",
            martin(),
            foyer("DEM"),
            Caf::RightOpened(proto::RsaRightOpened { date_ouverture: "2026-09-01".into() }),
        ),
        event(
            "demo-caf-0004",
            "2026-09-20T10:00:01+02:00",
            martin(),
            foyer("DEM"),
            Caf::SddChanged(proto::SddChanged { soumis: true }),
        ),
        event(
            "demo-caf-0005",
            "2026-09-20T10:00:02+02:00",
            durand(),
            foyer("CJT"),
            Caf::SddChanged(proto::SddChanged { soumis: true }),
        ),
    ];
    let mut lyon_event = event(
        "demo-caf-0101",
        "2026-10-05T11:00:00+02:00",
        lyon(),
        Some(Household { organisme: "691".into(), matricule: "7654321".into(), role: "DEM".into() }),
        Caf::RightOpened(proto::RsaRightOpened { date_ouverture: "2026-10-01".into() }),
    );
    lyon_event.location = at("069", "69381");
    events.push(lyon_event);
    // A foyer of the CAF du Rhône whose dossier is still received by 069 while it lives in
    // Grenoble: neither the Métropole's nor the Rhône's can be told, the fact waits "à affecter"
    // (`passerelle territoires a-affecter`, docs/territories.md).
    let mut waiting = event(
        "demo-caf-0102",
        "2026-10-06T10:00:00+02:00",
        person("2900438185012", "", "ROUSSEL", "Inès", "1990-04-11"),
        Some(Household { organisme: "691".into(), matricule: "7654400".into(), role: "DEM".into() }),
        Caf::RightOpened(proto::RsaRightOpened { date_ouverture: "2026-10-01".into() }),
    );
    waiting.location = at("069", "38185");
    events.push(waiting);
    events
}

/// France Travail's facts of the demo.
pub fn demandeur_emploi_events() -> Vec<DemandeurEmploiEvent> {
    vec![
        DemandeurEmploiEvent {
            event_id: "demo-ft-0001".into(),
            occurred_at: "2026-09-22T08:30:00+02:00".into(),
            person: person("1850752121003", "12345678901", "", "", ""),
            location: at("", "52121"),
            corrects_event_id: String::new(),
            fact: Some(Ft::Inscription(proto::Inscription {
                categorie: "1".into(),
                motif: "01".into(),
                date_inscription: "2026-09-22".into(),
            })),
        },
        DemandeurEmploiEvent {
            event_id: "demo-ft-0002".into(),
            occurred_at: "2026-09-23T08:30:00+02:00".into(),
            person: Some(Person { france_travail_id: "98765432109".into(), ..Person::default() }),
            location: at("", "52448"),
            corrects_event_id: String::new(),
            fact: Some(Ft::Inscription(proto::Inscription {
                categorie: "2".into(),
                motif: String::new(),
                date_inscription: String::new(),
            })),
        },
    ]
}

/// The département's facts of the demo.
pub fn orientation_events() -> Vec<OrientationEvent> {
    vec![
        OrientationEvent {
            event_id: "demo-cd52-0001".into(),
            occurred_at: "2026-10-02T14:00:00+02:00".into(),
            person: person("1850752121003", "", "", "", ""),
            location: at("052", ""),
            corrects_event_id: String::new(),
            fact: Some(Cd::OrientationDecided(proto::OrientationDecided {
                r#type: "SOCIO_PRO".into(),
                structure_siret: "73282932000074".into(),
                structure_nom: "Association d'insertion de Chaumont".into(),
                referent: Some(proto::Agent {
                    uid: "agent-cd52-0042".into(),
                    email: "referent.demo@haute-marne.example".into(),
                    siret: "73282932000074".into(),
                }),
            })),
        },
        OrientationEvent {
            event_id: "demo-cd52-0002".into(),
            occurred_at: "2026-10-03T14:00:00+02:00".into(),
            person: person("2870552121004", "", "", "", ""),
            location: at("052", ""),
            corrects_event_id: String::new(),
            fact: Some(Cd::OppositionRecorded(proto::OppositionRecorded {})),
        },
    ]
}

/// The parcours of the demo's person oriented to the association, pushed by the association
/// (`asso-insertion-52`, a structure): a diagnostic (one of its situations health data, shown to
/// the référent only), a plan and a rendez-vous.
pub fn parcours_events() -> Vec<proto::ParcoursEvent> {
    let event = |id: &str, when: &str, fact: Pa| proto::ParcoursEvent {
        event_id: id.into(),
        occurred_at: when.into(),
        person: person("1850752121003", "", "", "", ""),
        location: None,
        corrects_event_id: String::new(),
        fact: Some(fact),
    };
    let situation = |theme: &str, label: &str| proto::Situation {
        theme: theme.into(),
        label: label.into(),
        sensitive: false,
        noted_on: "2026-10-05".into(),
        noted_by: "agent-cd52-0042".into(),
    };
    vec![
        event(
            "demo-asso52-0001",
            "2026-10-05T10:00:00+02:00",
            Pa::DiagnosticRecorded(proto::DiagnosticRecorded {
                dernier_emploi: "Préparateur de commandes".into(),
                experience: "Six ans en entrepôt".into(),
                rome_code: "N1103".into(),
                niveau_qualification: "3".into(),
                situations: vec![
                    situation("LOGEMENT", "Difficulté à payer le loyer"),
                    situation("MOBILITE", "Aucun moyen de transport à disposition"),
                    situation("SANTE", "Existence d'un dossier MDPH"),
                ],
            }),
        ),
        event(
            "demo-asso52-0002",
            "2026-10-10T10:00:00+02:00",
            Pa::EngagementPlanSet(proto::EngagementPlanSet {
                signed_on: "2026-10-10".into(),
                revised_on: String::new(),
                weekly_hours: None,
                hours_motif: String::new(),
                objectives: vec![proto::Objective { theme: "MOBILITE".into(), label: "Obtenir le permis B".into() }],
                actions: vec![proto::PlanActionItem {
                    action_id: "permis-b".into(),
                    theme: "MOBILITE".into(),
                    label: "Code de la route à l'auto-école sociale".into(),
                    status: "EN_COURS".into(),
                    date_debut: "2026-10-15".into(),
                    date_fin: "2026-12-15".into(),
                    prescriber_siret: "73282932000074".into(),
                }],
            }),
        ),
        event(
            "demo-asso52-0003",
            "2026-10-12T10:00:00+02:00",
            Pa::RendezVousConvoked(proto::RendezVousConvoked {
                rdv_id: "rdv-suivi-1".into(),
                at: "2026-10-20T09:30:00+02:00".into(),
                structure_siret: "73282932000074".into(),
                objet: "SUIVI".into(),
            }),
        ),
    ]
}

/// Pushes the demo through the gRPC API at `endpoint`, each institution with its own
/// credentials from `credentials` (a directory written by `passerelle dev pki`); returns how
/// many events were accepted.
pub async fn push(endpoint: &str, credentials: &Path) -> anyhow::Result<usize> {
    let channel_of = |institution: &'static str| async move {
        let credentials = Credentials::from_dir(credentials, institution).map_err(anyhow::Error::msg)?;
        connect(endpoint, &credentials)
            .await
            .with_context(|| format!("connecting to the hub at {endpoint} as {institution}"))
    };
    let mut accepted = 0;
    for event in allocataire_events() {
        let institution =
            if event.household.as_ref().is_some_and(|h| h.organisme == "691") { "caf-691" } else { "caf-521" };
        let mut caf = AllocataireIngestClient::new(channel_of(institution).await?);
        caf.publish(event).await.context("publishing a CAF demo event")?;
        accepted += 1;
    }
    let mut ft = DemandeurEmploiIngestClient::new(channel_of("france-travail").await?);
    for event in demandeur_emploi_events() {
        ft.publish(event).await.context("publishing a France Travail demo event")?;
        accepted += 1;
    }
    let mut cd = OrientationIngestClient::new(channel_of("cd-52").await?);
    for event in orientation_events() {
        cd.publish(event).await.context("publishing a département demo event")?;
        accepted += 1;
    }
    // The association accompanies the person once the département's orientation has reached the
    // hub's state (the projector applies it within moments): until then its facts are refused.
    let mut asso = ParcoursIngestClient::new(channel_of("asso-insertion-52").await?);
    for event in parcours_events() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match asso.publish(event.clone()).await {
                Ok(_) => break,
                Err(status)
                    if status.code() == tonic::Code::PermissionDenied && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(status) => return Err(status).context("publishing the association's demo parcours"),
            }
        }
        accepted += 1;
    }
    Ok(accepted)
}
