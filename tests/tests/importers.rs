//! The importers drive the ingestion API with the credentials they are given: the reference
//! CNAF flux becomes the expected events, a second import publishes the same ids, broken files
//! fail saying where, unknown codes are refused with a reason while good facts go through.

mod fixtures;

use std::{collections::BTreeMap, path::PathBuf};

use passerelle_domain::{
    MotifList, Role,
    event::{Family, Payload, PersonalData},
};
use passerelle_e2e::{TestHub, repo_root, topics};
use passerelle_eventlog::codec;

fn sample_flux() -> PathBuf {
    repo_root().join("tests/fixtures/cnaf/RSABEM.xml")
}

fn sample_bytes() -> Vec<u8> {
    std::fs::read(sample_flux()).expect("the reference flux is in tests/fixtures/cnaf")
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("passerelle-import-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

/// Imports a CNAF flux as the caisse 521 (its own credentials and id key), quietly.
async fn caf_import(hub: &TestHub, path: &std::path::Path) -> anyhow::Result<passerelle_importers::driver::Summary> {
    passerelle_importers::import_cnaf_flux(path, hub.channel_as("caf-521").await?, &hub.id_key("caf-521")?, false, true)
        .await
}

/// The events on a family's topic, decoded, with their personal data opened.
async fn events_on(hub: &TestHub, family: Family) -> anyhow::Result<Vec<(codec::LoggedEvent, PersonalData)>> {
    let records =
        tokio::task::block_in_place(|| topics::read_all(&hub.config.kafka.bootstrap_servers, &hub.topic(family)))?;
    let mut events = Vec::new();
    for record in records {
        let event = hub.open_record(family, &record.value).await?;
        let personal = hub.open_personal(&event).await?;
        events.push((event, personal));
    }
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_cnaf_flux_imports_into_the_expected_events_and_a_second_import_adds_the_same_ids()
-> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let summary = caf_import(&hub, &sample_flux()).await?;
    assert_eq!((summary.records, summary.persons, summary.sent, summary.accepted, summary.refused), (2, 3, 12, 12, 0));
    assert_eq!(summary.warnings, ["TransmissionFlux declares 1 dossiers, the file holds 2"]);

    let events = events_on(&hub, Family::Allocataire).await?;
    assert_eq!(events.len(), 12);
    let by_type = |event_type: &str, nom: &str| {
        events
            .iter()
            .find(|(e, p)| e.payload.event_type() == event_type && p.nom.as_deref() == Some(nom))
            .unwrap_or_else(|| panic!("no {event_type} for {nom}"))
    };
    // Foyer 1 (CAF 521, dossier 2055990, received by the Haute-Marne): TIFOUR and KELLER, both CJT.
    let (demand, demand_personal) = by_type("rsa.demand_recorded", "TIFOUR");
    assert_eq!(demand.payload, Payload::RsaDemandRecorded { date_demande: "2018-08-06".parse()? });
    assert_eq!(demand.envelope.occurred_at.to_rfc3339(), "2018-08-06T00:00:00+00:00");
    assert_eq!(demand.envelope.territory.as_deref(), Some("52"));
    assert_eq!(demand.envelope.commune.as_deref(), Some("92044"));
    assert_eq!(demand.envelope.source.institution, "caf-521");
    let household = demand.envelope.household.as_ref().expect("household");
    assert_eq!((household.organisme.as_str(), household.role), ("521", Some(Role::Conjoint)));
    assert_eq!(demand_personal.nir, Some(passerelle_domain::Nir::parse("2820251108030")?.with_key()));
    assert_eq!(demand_personal.matricule.as_deref(), Some("205599000000000"));
    assert_eq!(demand_personal.numero_demande.as_deref(), Some("01024041052"));
    assert_eq!(demand_personal.prenoms.as_deref(), Some("SOPHIE"));
    assert_eq!(demand_personal.date_naissance, Some("1982-02-01".parse()?));
    assert_eq!(demand_personal.idassedic.as_deref(), Some("1253359X"), "the legacy id travels as an attribute");

    let (closed, _) = by_type("rsa.right_closed", "TIFOUR");
    let expected_motif = passerelle_domain::Motif::parse(MotifList::Cloture, "PCG")?;
    assert_eq!(
        closed.payload,
        Payload::RsaRightClosed {
            motif: expected_motif,
            date_cloture: Some("2021-11-30".parse()?),
            prior_month: false
        }
    );
    assert_eq!(closed.envelope.occurred_at.to_rfc3339(), "2021-11-30T00:00:00+00:00");

    let (sdd_tifour, _) = by_type("rsa.sdd_changed", "TIFOUR");
    assert_eq!(sdd_tifour.payload, Payload::SddChanged { soumis: true });
    assert_eq!(
        sdd_tifour.envelope.occurred_at.to_rfc3339(),
        "2022-02-28T00:00:00+00:00",
        "a snapshot fact happens at DTREF"
    );
    let (sdd_keller, keller) = by_type("rsa.sdd_changed", "KELLER");
    assert_eq!(sdd_keller.payload, Payload::SddChanged { soumis: false });
    assert_eq!(keller.nir.as_deref().map(|n| &n[..13]), Some("1770393050005"));
    let (role_keller, _) = by_type("rsa.household_role_set", "KELLER");
    assert_eq!(role_keller.payload, Payload::HouseholdRoleSet { role: Role::Conjoint });

    let (moved, address) = by_type("rsa.address_changed", "TIFOUR");
    assert_eq!(moved.payload, Payload::AddressChanged { previous_authority: None, mutation: None });
    assert_eq!(moved.envelope.occurred_at.to_rfc3339(), "2021-05-26T00:00:00+00:00", "an address dates from DTEMM");
    assert_eq!(address.address_lines, ["25 RUE HENRI BARBUSSE"]);
    assert_eq!(address.code_postal.as_deref(), Some("92300"));

    // Foyer 2: BULLOCK, born abroad (NIR department 99).
    let (_, bullock) = by_type("rsa.demand_recorded", "BULLOCK");
    assert_eq!(bullock.nir.as_deref().map(|n| &n[..13]), Some("2730799404078"));

    // A second import of the same month publishes exactly the same ids.
    let again = caf_import(&hub, &sample_flux()).await?;
    assert_eq!(again.accepted, 12);
    let twice = events_on(&hub, Family::Allocataire).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (event, _) in &twice {
        *counts.entry(event.envelope.event_id.to_string()).or_default() += 1;
    }
    assert_eq!(counts.len(), 12, "no new id");
    assert!(counts.values().all(|count| *count == 2));
    assert!(counts.keys().all(|id| id.starts_with("cnaf.") && id.len() < 64), "ids carry no personal data");

    // A relaying département: the facts are the CAF's, relayed from that file.
    let relayed = passerelle_importers::import_cnaf_flux(
        &sample_flux(),
        hub.channel_as("cd-52").await?,
        &hub.id_key("caf-521")?,
        true,
        true,
    )
    .await?;
    assert_eq!(relayed.accepted, 12);
    let all = events_on(&hub, Family::Allocataire).await?;
    let relayed_events: Vec<_> = all.iter().filter(|(e, _)| e.envelope.source.relayed_by.is_some()).collect();
    assert_eq!(relayed_events.len(), 12);
    for (event, _) in relayed_events {
        assert_eq!(event.envelope.source.institution, "caf-521");
        assert_eq!(event.envelope.source.relayed_by.as_deref(), Some("cd-52"));
        assert_eq!(event.envelope.source.relay_file.as_deref(), Some("RSABEM.xml"));
        assert!(counts.contains_key(event.envelope.event_id.as_str()), "relayed facts keep their ids");
    }
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_flux_files_fail_with_the_line_and_the_reason() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let sample = sample_bytes();
    let truncated = write_temp("truncated.xml", &sample[..sample.len() / 2]);
    let error = caf_import(&hub, &truncated).await.expect_err("truncated");
    let message = format!("{error:#}");
    assert!(message.starts_with("truncated.xml:"), "{message}");
    assert!(message.contains("truncated") || message.contains("not well-formed"), "{message}");

    let text = encoding_rs::WINDOWS_1252.decode(&sample).0.into_owned();
    let wrong_root = text.replacen("<Racine", "<Flux", 1).replacen("</Racine>", "</Flux>", 1);
    let path = write_temp("root.xml", &encoding_rs::WINDOWS_1252.encode(&wrong_root).0);
    let message = format!("{:#}", caf_import(&hub, &path).await.expect_err("root"));
    assert!(message.contains("root.xml:3:") && message.contains("<Racine>"), "{message}");

    let no_organisme = text.replacen("<NUMORG>521</NUMORG>", "", 1);
    let path = write_temp("numorg.xml", &encoding_rs::WINDOWS_1252.encode(&no_organisme).0);
    let message = format!("{:#}", caf_import(&hub, &path).await.expect_err("numorg"));
    assert!(message.contains("numorg.xml:13:") && message.contains("NUMORG"), "{message}");

    let mismatched = text.replacen("</NOM>", "</PRENOM>", 1);
    let path = write_temp("tags.xml", &encoding_rs::WINDOWS_1252.encode(&mismatched).0);
    let message = format!("{:#}", caf_import(&hub, &path).await.expect_err("tags"));
    assert!(message.contains("tags.xml:"), "{message}");
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flux_with_unknown_codes_imports_its_good_facts_and_reports_the_rest() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let text = encoding_rs::WINDOWS_1252.decode(&sample_bytes()).0.into_owned();
    // Foyer 1: an unknown right state; foyer 2: an unknown role and an unknown closure motif.
    let mut edited = text.replacen("<ETATDOSRSA>5</ETATDOSRSA>", "<ETATDOSRSA>9</ETATDOSRSA>", 1);
    let second_foyer = edited.rfind("<InfosFoyerRSA>").expect("two foyers");
    let (head, tail) = edited.split_at(second_foyer);
    let tail = tail
        .replace("<ROLEPERS>CJT</ROLEPERS>\n\t\t\t\t<TOPCHAPERS>1", "<ROLEPERS>XXX</ROLEPERS>\n\t\t\t\t<TOPCHAPERS>1");
    edited = format!("{head}{tail}");
    let path = write_temp("codes.xml", &encoding_rs::WINDOWS_1252.encode(&edited).0);
    let summary = caf_import(&hub, &path).await?;
    assert!(summary.refused >= 2, "{}", summary.render("foyers"));
    assert!(summary.reasons.keys().any(|r| r.contains("ETATDOSRSA \"9\"")), "{:?}", summary.reasons);
    assert!(summary.reasons.keys().any(|r| r.contains("household.role")), "{:?}", summary.reasons);
    assert!(summary.examples.iter().all(|(line, _)| *line > 1), "refusals say their line");
    assert_eq!(summary.accepted + summary.refused, summary.sent + 1, "one refusal is the importer's own");
    let on_topic = events_on(&hub, Family::Allocataire).await?;
    assert_eq!(on_topic.len() as u64, summary.accepted, "the good facts went through");
    assert!(summary.accepted >= 6);
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_france_travail_extract_survives_what_real_files_contain() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let csv = "\u{feff}Identifiant_FT;NIR;Nom;Prenom;Date_Naissance;Code_Commune;Date_Inscription;Categorie;Motif_Inscription;Modalite_Accompagnement;Referent_Nom;Referent_Email;Code_Safir;Date_PPAE;Date_Cessation;Motif_Cessation;Date_Radiation;Motif_Radiation\n\
        12345678901;1850752121003;\"MARTIN\";Paul;12/07/1985;52121;2026-09-22;1;01;RENFORCE;\"DUPONT \"\"Jean\"\"\";jean.dupont@francetravail.example;52011;20261001;NULL;;;\n\
        98765432109;NULL;BERNARD;Karim;NULL;69381;01/10/2026;9;;SUIVI;;;;;;;;\n\
        11122233344;;;;;52448;2026-10-05T00:00:00;2;;;;;;;2026-11-01;CR;;\n\
        ;2870552121004;DURAND;Julie;;52121;2026-10-05;1;;;;;;;;;;\n\
        55566677788;;;;;52121;pas une date;1;;;;;;;;;;\n";
    let path = write_temp("extract.csv", csv.as_bytes());
    let summary = passerelle_importers::import_ft_csv(
        &path,
        hub.channel_as("france-travail").await?,
        &hub.id_key("france-travail")?,
        true,
    )
    .await?;
    assert_eq!(summary.records, 5);
    // Row 1: inscription, accompaniment, référent, PPAE; row 2: inscription (unknown catégorie 9,
    // refused by the hub) and accompaniment; row 3: inscription and cessation; rows 4 and 5
    // are refused by the importer (no id, no date).
    assert_eq!(summary.sent, 8, "{}", summary.render("rows"));
    assert_eq!(summary.accepted, 7, "{}", summary.render("rows"));
    assert_eq!(summary.refused, 3, "{}", summary.render("rows"));
    assert!(summary.reasons.keys().any(|r| r.contains("inscription.categorie")), "{:?}", summary.reasons);
    assert!(summary.reasons.keys().any(|r| r.contains("identifiant_ft is empty")));
    // The column and the rule are named; the value is not repeated (a date may be a birth date).
    assert!(summary.reasons.keys().any(|r| r.contains("date_inscription") && r.contains("not a date")));
    assert!(!summary.reasons.keys().any(|r| r.contains("pas une date")), "{:?}", summary.reasons);
    let events = events_on(&hub, Family::DemandeurEmploi).await?;
    assert_eq!(events.len(), 7);
    let referent = events.iter().find(|(e, _)| e.payload.event_type() == "ft.referent_assigned").expect("referent");
    assert_eq!(referent.1.referent_nom.as_deref(), Some("DUPONT \"Jean\""));
    assert_eq!(referent.1.date_naissance, Some("1985-07-12".parse()?));
    let ppae = events.iter().find(|(e, _)| e.payload.event_type() == "ft.ppae_signed").expect("ppae");
    assert_eq!(ppae.0.payload, Payload::PpaeSigned { date_signature: "2026-10-01".parse()? });
    hub.running.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_without_nir_are_imported_under_a_civil_identity_key() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let text = encoding_rs::WINDOWS_1252.decode(&sample_bytes()).0.into_owned();
    let without_nir = text.replacen("<NIR>1770393050005</NIR>", "", 1);
    let path = write_temp("sans-nir.xml", &encoding_rs::WINDOWS_1252.encode(&without_nir).0);
    let summary = caf_import(&hub, &path).await?;
    assert_eq!((summary.sent, summary.accepted, summary.refused), (12, 12, 0), "{}", summary.render("foyers"));
    let events = events_on(&hub, Family::Allocataire).await?;
    let keller: Vec<_> = events.iter().filter(|(_, p)| p.nom.as_deref() == Some("KELLER")).collect();
    assert_eq!(keller.len(), 2, "KELLER's role and SDD facts");
    for (event, personal) in keller {
        assert!(event.envelope.subject.as_str().starts_with("civ:"), "{:?}", event.envelope.subject);
        assert_eq!(personal.nir, None);
        assert_eq!(personal.date_naissance, Some("1977-03-23".parse()?));
    }
    hub.running.shutdown().await
}

/// A structure's parcours export, imported as the structure: the diagnostic and the plan of the
/// person it accompanies go through; the person it does not accompany is refused by the hub with
/// the rule, a stray row by the importer with its line; importing the file again publishes the
/// same fact ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structures_parcours_export_goes_through_for_the_persons_it_accompanies_only() -> anyhow::Result<()> {
    use fixtures::*;
    use passerelle_ingest::proto::{
        allocataire_ingest_client::AllocataireIngestClient, orientation_ingest_client::OrientationIngestClient,
    };
    let hub = TestHub::spawn().await?;
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut cd_client = OrientationIngestClient::new(hub.channel_as("cd-52").await?);
    caf_client.publish(caf("s-caf-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("s-caf-2", "2026-09-20T09:00:02+02:00", fontaine(), "CJT", sdd(true))).await?;
    cd_client.publish(cd("s-cd-1", "2026-10-02T14:00:00+02:00", legrand(), orientation_decided())).await?;
    let key = hub.subject_keys().nir(&passerelle_domain::Nir::parse(NIR_LEGRAND)?).as_str().to_owned();
    let pool = hub.running.pool.clone();
    passerelle_e2e::eventually("Legrand oriented to the association", async || {
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT d.referent_siret FROM subject_links l JOIN dossiers d USING (person_id) WHERE l.subject_key = $1",
        )
        .bind(&key)
        .fetch_optional(&pool)
        .await?;
        Ok(row.filter(|(siret,)| siret.is_some()).map(|_| ()))
    })
    .await?;
    let csv = format!(
        "NIR;Type;Thème;Libellé;Sensible;Noté par;Date;Identifiant action;Statut;Date signature\n\
         {NIR_LEGRAND};SITUATION;LOGEMENT;Difficulté à payer le loyer;non;agent-cd52-0042;05/10/2026;;;\n\
         {NIR_LEGRAND};SITUATION;SANTE;Existence d'un dossier MDPH;;agent-cd52-0042;05/10/2026;;;\n\
         {NIR_LEGRAND};ACTION;MOBILITE;Code de la route;;;;permis-b;EN_COURS;10/10/2026\n\
         {NIR_FONTAINE};SITUATION;NUMERIQUE;Pas d'accès à internet;;agent-cd52-0042;06/10/2026;;;\n\
         1790352121005;NOTE;;;;;;;;\n"
    );
    let path = write_temp("parcours.csv", csv.as_bytes());
    let import = async || {
        passerelle_importers::import_structure_csv(
            &path,
            hub.channel_as("asso-insertion-52").await?,
            &hub.id_key("asso-insertion-52")?,
            true,
        )
        .await
    };
    let summary = import().await?;
    assert_eq!((summary.records, summary.persons), (5, 3), "{}", summary.render("rows"));
    assert_eq!((summary.sent, summary.accepted, summary.refused), (3, 2, 2), "{}", summary.render("rows"));
    assert!(summary.reasons.keys().any(|r| r.contains("structure.accompanies")), "{:?}", summary.reasons);
    assert!(summary.reasons.keys().any(|r| r.contains("SITUATION, an OBJECTIF or an ACTION")), "{:?}", summary.reasons);
    let events = events_on(&hub, Family::Parcours).await?;
    let mut types: Vec<&str> = events.iter().map(|(e, _)| e.payload.event_type()).collect();
    types.sort();
    assert_eq!(types, ["parcours.diagnostic_recorded", "parcours.plan_set"]);
    let diagnostic = events.iter().find(|(e, _)| e.payload.event_type() == "parcours.diagnostic_recorded").expect("");
    let situations = &diagnostic.1.parcours.as_ref().expect("sealed detail").situations;
    assert_eq!(situations.len(), 2);
    assert!(situations[1].sensitive, "SANTE is sensitive");
    // Again: the same ids (the projection keeps one of each).
    let again = import().await?;
    assert_eq!(again.accepted, 2);
    let ids: std::collections::BTreeSet<String> =
        events_on(&hub, Family::Parcours).await?.iter().map(|(e, _)| e.envelope.event_id.as_str().to_owned()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    hub.running.shutdown().await
}
