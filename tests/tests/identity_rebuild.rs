//! Identity decisions and rebuilds: a conflict is decided by a human through the command line,
//! the decision travels on the identity topic, and `passerelle projections rebuild` replays the
//! topics into fresh tables, swapped in under a running hub, with the same result.

mod fixtures;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use fixtures::*;
use passerelle_domain::{FranceTravailId, Nir};
use passerelle_e2e::{TestHub, repo_root};
use passerelle_ingest::proto::{
    allocataire_ingest_client::AllocataireIngestClient, demandeur_emploi_ingest_client::DemandeurEmploiIngestClient,
};
use passerelle_readmodel::person_id_for;
use uuid::Uuid;

/// A fourth person, for the merge.
const NIR_DOUBLON: &str = "1920375056123";

fn passerelle(hub: &TestHub) -> anyhow::Result<Command> {
    let binary = repo_root().join("target/debug/passerelle");
    anyhow::ensure!(binary.exists(), "{} is missing: build it first (infra/test.sh does)", binary.display());
    let mut command = Command::new(binary);
    command.arg("--config").arg(hub.config_file()?);
    Ok(command)
}

fn run(hub: &TestHub, args: &[&str]) -> anyhow::Result<String> {
    let output = passerelle(hub)?.args(args).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(output.status.success(), "passerelle {args:?} failed: {stdout}\n{stderr}");
    for secret in [NIR_LEGRAND, NIR_FONTAINE, NIR_MSA, NIR_DOUBLON, FT_LEGRAND, FT_ONLY] {
        anyhow::ensure!(!stdout.contains(secret) && !stderr.contains(secret), "passerelle {args:?} printed {secret}");
    }
    Ok(stdout)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn count(hub: &TestHub, sql: &'static str) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&hub.running.pool).await?;
    Ok(n)
}

async fn person_of(hub: &TestHub, key: &str) -> anyhow::Result<Option<Uuid>> {
    Ok(passerelle_readmodel::person_of_subject(&hub.running.pool, key).await?)
}

/// Everything a reader of the read models can see, in a comparable form.
/// The read models' tables, columns (type, nullability, default) and indexes, as PostgreSQL
/// describes them.
async fn shape(hub: &TestHub) -> anyhow::Result<Vec<String>> {
    let columns: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
         FROM information_schema.columns WHERE table_schema = 'readmodel' ORDER BY 1",
    )
    .fetch_all(&hub.running.pool)
    .await?;
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT replace(indexdef, 'readmodel.', '') FROM pg_indexes WHERE schemaname = 'readmodel' ORDER BY 1",
    )
    .fetch_all(&hub.running.pool)
    .await?;
    Ok(columns.into_iter().chain(indexes).map(|(line,)| line).collect())
}

async fn snapshot(hub: &TestHub) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for sql in [
        "SELECT (to_jsonb(d) - 'updated_at')::text FROM dossiers d ORDER BY person_id",
        "SELECT concat_ws('|', person_id, source, event_id, subject_key, household_key, superseded_by, retracted_by)
         FROM person_events ORDER BY person_id, source, event_id",
        "SELECT concat_ws('|', l.subject_key, COALESCE(p.merged_into, p.person_id))
         FROM subject_links l JOIN persons p USING (person_id) ORDER BY l.subject_key",
        "SELECT concat_ws('|', decision_id, subject_key, decision) FROM identity_decisions ORDER BY decision_id",
        "SELECT concat_ws('|', subject_key, resolution) FROM identity_conflicts ORDER BY subject_key",
    ] {
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&hub.running.pool).await?;
        lines.extend(rows.into_iter().map(|(line,)| line));
    }
    Ok(lines)
}

/// The conflict ids `identite conflicts` prints, with the line of each.
fn conflicts(listing: &str) -> Vec<(i64, String)> {
    listing
        .lines()
        .filter_map(|line| {
            let id = line.strip_prefix('#')?.split_whitespace().next()?.parse().ok()?;
            Some((id, line.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_travel_on_the_identity_topic_and_a_rebuild_under_a_live_hub_reproduces_everything()
-> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let keys = hub.subject_keys();
    let key = |nir: &str| Ok::<_, anyhow::Error>(keys.nir(&Nir::parse(nir)?).as_str().to_owned());
    let ft_key =
        |id: &str| Ok::<_, anyhow::Error>(keys.france_travail(&FranceTravailId::parse(id)?).as_str().to_owned());
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut ft_client = DemandeurEmploiIngestClient::new(hub.channel_as("france-travail").await?);

    caf_client.publish(caf("i-caf-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("i-caf-2", "2026-09-20T09:00:01+02:00", legrand(), "DEM", sdd(true))).await?;
    // Two NIRs claim Legrand's FT id; an event about the FT id alone follows the key.
    ft_client.publish(ft_inscription("i-ft-1", person(NIR_LEGRAND, FT_LEGRAND, "", "", ""))).await?;
    ft_client.publish(ft_inscription("i-ft-2", person(NIR_FONTAINE, FT_LEGRAND, "", "", ""))).await?;
    ft_client.publish(ft_inscription("i-ft-3", person("", FT_LEGRAND, "", "", ""))).await?;
    // Two NIRs claim another FT id: the human will say they are one person (a NIR corrected).
    ft_client.publish(ft_inscription("i-ft-4", person(NIR_MSA, FT_ONLY, "", "", ""))).await?;
    ft_client.publish(ft_inscription("i-ft-5", person(NIR_DOUBLON, FT_ONLY, "", "", ""))).await?;
    eventually("two conflicts", async || Ok(count(&hub, "SELECT count(*) FROM identity_conflicts").await? == 2))
        .await?;
    eventually("every event projected", async || Ok(count(&hub, "SELECT count(*) FROM person_events").await? == 7))
        .await?;

    let listing = run(&hub, &["identite", "conflicts"])?;
    let open = conflicts(&listing);
    assert_eq!(open.len(), 2, "{listing}");
    let on = |ft: &str| -> anyhow::Result<i64> {
        let wanted = ft_key(ft)?;
        open.iter()
            .find(|(_, line)| line.contains(&wanted))
            .map(|(id, _)| *id)
            .ok_or_else(|| anyhow::anyhow!("no conflict on {ft} in {listing}"))
    };
    let (legrand_id, fontaine_id) = (person_id_for(&key(NIR_LEGRAND)?), person_id_for(&key(NIR_FONTAINE)?));
    let holder = legrand_id.min(fontaine_id);
    let claimant = legrand_id.max(fontaine_id);
    assert_eq!(person_of(&hub, &ft_key(FT_LEGRAND)?).await?, Some(holder), "undecided: the smaller id holds");

    run(
        &hub,
        &[
            "identite",
            "resolve",
            "--conflict",
            &on(FT_LEGRAND)?.to_string(),
            "--decision",
            "confirm",
            "--by",
            "ops.dupont",
        ],
    )?;
    run(
        &hub,
        &["identite", "resolve", "--conflict", &on(FT_ONLY)?.to_string(), "--decision", "merge", "--by", "ops.dupont"],
    )?;
    eventually("both decisions applied", async || {
        Ok(count(&hub, "SELECT count(*) FROM identity_decisions").await? == 2
            && count(&hub, "SELECT count(*) FROM identity_conflicts WHERE resolution IS NULL").await? == 0)
    })
    .await?;
    // A decided conflict takes no second decision.
    let refused = passerelle(&hub)?
        .args([
            "identite",
            "resolve",
            "--conflict",
            &on(FT_ONLY)?.to_string(),
            "--decision",
            "reject",
            "--by",
            "ops.dupont",
        ])
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already decided"), "{refused:?}");

    // Confirmed: the FT id, and the event known by it alone, moved to the claimant.
    assert_eq!(person_of(&hub, &ft_key(FT_LEGRAND)?).await?, Some(claimant));
    let (moved,): (Uuid,) = sqlx::query_as("SELECT person_id FROM person_events WHERE event_id = 'i-ft-3'")
        .fetch_one(&hub.running.pool)
        .await?;
    assert_eq!(moved, claimant);
    let claimant_dossier = passerelle_readmodel::dossier(&hub.running.pool, claimant).await?.expect("dossier");
    assert_eq!(claimant_dossier.ft_status.as_deref(), Some("INSCRIT"));
    // Merged: one person, the id of the stronger key; the other id redirects.
    let (msa, doublon) = (key(NIR_MSA)?, key(NIR_DOUBLON)?);
    let merged = person_id_for(msa.as_str().min(doublon.as_str()));
    let old = person_id_for(msa.as_str().max(doublon.as_str()));
    assert_eq!(person_of(&hub, &msa).await?, Some(merged));
    assert_eq!(person_of(&hub, &doublon).await?, Some(merged));
    assert_eq!(passerelle_readmodel::current_person(&hub.running.pool, old).await?, Some(merged));
    assert!(passerelle_readmodel::dossier(&hub.running.pool, old).await?.is_none());
    let timeline = passerelle_readmodel::timeline(&hub.running.pool, merged).await?;
    assert_eq!(timeline.len(), 2, "both inscriptions in the merged timeline");
    assert!(run(&hub, &["identite", "conflicts"])?.contains("no identity conflicts awaiting a decision"));

    // Rebuild while the hub serves and projects: same read models, decisions included, in
    // tables of the same shape (the rebuild creates them from the migration files).
    let shape_before = shape(&hub).await?;
    let before = snapshot(&hub).await?;
    let output = run(&hub, &["projections", "rebuild", "dossier"])?;
    assert!(output.contains("rebuilt and swapped in"), "{output}");
    let after = snapshot(&hub).await?;
    let only_before: Vec<&String> = before.iter().filter(|line| !after.contains(line)).collect();
    let only_after: Vec<&String> = after.iter().filter(|line| !before.contains(line)).collect();
    assert!(
        only_before.is_empty() && only_after.is_empty(),
        "before only: {only_before:#?}\nafter only: {only_after:#?}"
    );
    assert_eq!(before, after);
    assert_eq!(shape_before, shape(&hub).await?, "the rebuilt tables have the migrations' columns and indexes");
    let (schemas,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname IN ('readmodel_rebuild', 'readmodel_retired')")
            .fetch_one(&hub.running.pool)
            .await?;
    assert_eq!(schemas, 0, "nothing left behind");

    // The live projection goes on in the swapped-in tables.
    caf_client.publish(caf("i-caf-3", "2026-10-20T09:00:00+02:00", legrand(), "DEM", sdd(false))).await?;
    eventually("the event after the swap", async || {
        Ok(passerelle_readmodel::dossier(&hub.running.pool, legrand_id).await?.is_some_and(|d| !d.sdd))
    })
    .await?;
    assert!(run(&hub, &["projections", "rebuild", "nothing"]).is_err(), "unknown projection refused");
    hub.running.shutdown().await
}
