//! One trace follows an event from the gRPC call to its projection, through the `traceparent`
//! header of the Kafka record; and a leak scan: known NIRs (13 and 15 characters), an MSA
//! matricule, names and birth dates pushed through every path are found in none of the logs,
//! `/metrics`, the exported spans and `passerelle dlq list`.

mod fixtures;

use std::time::{Duration, Instant};

use fixtures::*;
use passerelle_e2e::{TestHub, logs, repo_root, topics};
use passerelle_ingest::proto::{
    AllocataireEvent, Household, allocataire_ingest_client::AllocataireIngestClient,
    demandeur_emploi_ingest_client::DemandeurEmploiIngestClient,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_call_to_projection_and_no_personal_data_anywhere() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut msa_client = AllocataireIngestClient::new(hub.channel_as("msa-052").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);

    caf_client.publish(caf("t-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("t-2", "2026-09-20T09:00:01+02:00", fontaine(), "CJT", sdd(true))).await?;
    let msa = AllocataireEvent {
        household: Some(Household { organisme: "052".into(), matricule: NIR_MSA.into(), role: "DEM".into() }),
        ..caf(
            "t-3",
            "2026-09-02T09:00:00+02:00",
            person(NIR_MSA, "", "VIGNERON", "Luc", "1979-03-30"),
            "DEM",
            right_opened(),
        )
    };
    msa_client.publish(msa).await?;
    ft_client
        .publish(ft_inscription("t-4", person(&nir15(NIR_LEGRAND), FT_LEGRAND, "LEGRAND", "Aurélie", "1985-07-12")))
        .await?;
    // A diagnostic with a health item and free text, and the same refused (an invalid ROME code).
    let mut parcours_client =
        passerelle_ingest::proto::parcours_ingest_client::ParcoursIngestClient::new(hub.channel_as("cd-52").await?);
    let diagnostic = |event_id: &str, rome: &str| passerelle_ingest::proto::ParcoursEvent {
        event_id: event_id.into(),
        occurred_at: "2026-10-05T10:00:00+02:00".into(),
        person: legrand(),
        location: None,
        corrects_event_id: String::new(),
        fact: Some(passerelle_ingest::proto::parcours_event::Fact::DiagnosticRecorded(
            passerelle_ingest::proto::DiagnosticRecorded {
                dernier_emploi: "Soudeuse à l'arc".into(),
                experience: "Douze ans en chaudronnerie".into(),
                rome_code: rome.into(),
                niveau_qualification: "3".into(),
                situations: vec![
                    passerelle_ingest::proto::Situation {
                        theme: "SANTE".into(),
                        label: "Suivi psychiatrique hebdomadaire".into(),
                        sensitive: true,
                        noted_on: "2026-10-05".into(),
                        noted_by: "agent-cd52-0042".into(),
                    },
                    passerelle_ingest::proto::Situation {
                        theme: "DIFFICULTE_FINANCIERE".into(),
                        label: "En situation de surendettement".into(),
                        sensitive: false,
                        noted_on: "2026-10-05".into(),
                        noted_by: "agent-cd52-0042".into(),
                    },
                ],
            },
        )),
    };
    parcours_client.publish(diagnostic("t-6", "H2913")).await?;
    assert!(parcours_client.publish(diagnostic("t-7", "soudure")).await.is_err());
    // A refused event full of personal data, and the same event id with another content (a
    // conflict, dead-lettered), and a poison record keyed by a subject key.
    let mut refused = caf("t-5", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened());
    refused.household = None;
    assert!(caf_client.publish(refused).await.is_err());
    caf_client.publish(caf("t-2", "2026-09-20T09:00:01+02:00", fontaine(), "CJT", sdd(false))).await?;
    let legrand_key = hub.subject_keys().nir(&passerelle_domain::Nir::parse(NIR_LEGRAND)?);
    hub.publish_poison(passerelle_domain::event::Family::Allocataire, legrand_key.as_str()).await?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let person = loop {
        let (applied, dead): (i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM applied_events), (SELECT count(*) FROM dead_letters)")
                .fetch_one(&hub.running.pool)
                .await?;
        if applied == 5 && dead == 2 {
            break passerelle_readmodel::person_of_subject(&hub.running.pool, legrand_key.as_str())
                .await?
                .expect("Legrand");
        }
        anyhow::ensure!(Instant::now() < deadline, "not projected ({applied} applied, {dead} dead letters)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // An API read that opens the sealed identity (names in the answer, nowhere else).
    let token =
        passerelle::dev_token(&hub.config, "cd52.orientation", &hub.credentials_dir.join("oidc-dev-key.der"), 300)?;
    let http = reqwest::Client::new();
    let dossier: serde_json::Value = http
        .get(format!("http://{}/api/v1/dossiers/{person}", hub.running.http_addr))
        .bearer_auth(&token)
        .header("X-Motif-Acces", "orientation")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(dossier["sections"]["identite"]["nom"], serde_json::json!("LEGRAND"));

    // The trace: the Kafka record carries the call's traceparent; the projector's span of
    // that event is in the same trace, a child of the ingestion span.
    let records = topics::read_all(
        &hub.config.kafka.bootstrap_servers,
        &hub.topic(passerelle_domain::event::Family::Allocataire),
    )?;
    let mut record = None;
    for candidate in &records {
        if hub.event_id_of(passerelle_domain::event::Family::Allocataire, &candidate.value).await.as_deref()
            == Some("t-1")
        {
            record = Some(candidate);
        }
    }
    let record = record.expect("t-1");
    let traceparent = record
        .headers
        .iter()
        .find(|(name, _)| name == "traceparent")
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .expect("a traceparent header on the record");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let (trace_id, parent_span) = (parts[1], parts[2]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = logs::spans();
        if spans.iter().any(|s| s.name == "projector.apply" && s.span_context.trace_id().to_string() == trace_id) {
            break spans;
        }
        anyhow::ensure!(Instant::now() < deadline, "no projector span in trace {trace_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ingest = spans
        .iter()
        .find(|s| s.span_context.span_id().to_string() == parent_span)
        .expect("the span the traceparent names");
    assert_eq!(ingest.name, "ingest.call");
    assert_eq!(ingest.span_context.trace_id().to_string(), trace_id);
    let apply = spans
        .iter()
        .find(|s| s.name == "projector.apply" && s.span_context.trace_id().to_string() == trace_id)
        .expect("apply span");
    assert_eq!(apply.parent_span_id.to_string(), parent_span, "the apply span is a child of the call's span");
    assert!(spans.iter().any(|s| s.name == "api.request"), "API requests are traced");
    assert!(
        logs::captured().contains(&format!("\"trace_id\":\"{trace_id}\"")),
        "the JSON log lines of the call carry its trace id"
    );

    // The leak scan.
    let metrics = http.get(format!("http://{}/metrics", hub.running.ops_addr)).send().await?.text().await?;
    let dlq = std::process::Command::new(repo_root().join("target/debug/passerelle"))
        .arg("--config")
        .arg(hub.config_file()?)
        .args(["dlq", "list", "--all"])
        .output()?;
    anyhow::ensure!(dlq.status.success(), "dlq list failed: {}", String::from_utf8_lossy(&dlq.stderr));
    let dlq = String::from_utf8_lossy(&dlq.stdout).into_owned();
    assert!(dlq.contains("undecodable") && dlq.contains("conflict"), "{dlq}");
    let spans_text: String = logs::spans().iter().map(|span| format!("{span:?}\n")).collect();
    let mut needles = personal_needles();
    needles.extend(["Aurélie".to_owned(), "Luc".to_owned(), "1979-03-30".to_owned()]);
    // The parcours: free text and a health item.
    needles.extend(["Soudeuse".to_owned(), "chaudronnerie".to_owned(), "psychiatrique".to_owned()]);
    needles.extend(["surendettement".to_owned()]);
    for (place, text) in [("logs", logs::captured()), ("/metrics", metrics), ("spans", spans_text), ("dlq list", dlq)] {
        assert!(text.len() > 100 || place == "dlq list", "{place} is suspiciously empty");
        for needle in &needles {
            assert!(!text.contains(needle.as_str()), "{place} contains {needle:?}");
        }
    }
    hub.running.shutdown().await
}
