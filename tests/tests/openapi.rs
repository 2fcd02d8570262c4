//! The OpenAPI document of the API feuille de route validates and matches what the server
//! returns, and the server accepts every request the document calls valid: schemathesis (PyPI)
//! against a running hub holding dossiers, with a valid token of each role, every check on
//! (positive-data acceptance included), ten runs with different seeds, printed. The NIR's key,
//! which JSON Schema cannot say, is written by a hook (tests/python/schemathesis_hooks.py).

mod fixtures;

use std::{path::PathBuf, process::Command};

use fixtures::*;
use passerelle_e2e::{TestHub, repo_root};
use passerelle_ingest::proto::allocataire_ingest_client::AllocataireIngestClient;

fn schemathesis() -> anyhow::Result<PathBuf> {
    let python = std::env::var("PASSERELLE_TEST_PYTHON").map_err(|_| {
        anyhow::anyhow!(
            "PASSERELLE_TEST_PYTHON is not set: run the tests with infra/test.sh, which installs schemathesis"
        )
    })?;
    let binary = PathBuf::from(python).with_file_name("schemathesis");
    anyhow::ensure!(binary.exists(), "{} is missing: infra/test.sh installs it", binary.display());
    Ok(binary)
}

/// Runs per role, each with its own seed.
const RUNS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_server_for_every_role() -> anyhow::Result<()> {
    let schemathesis = schemathesis()?;
    // Limits far above schemathesis' pace: the fuzzing explores the API, not its rate limits
    // (tests/tests/limits.rs does).
    let hub = TestHub::spawn_configured(|config| {
        config.api.limits.per_agent_per_second = 10_000;
        config.api.limits.per_agent_burst = 10_000;
        config.api.limits.unauthenticated_per_second = 10_000;
        config.api.limits.unauthenticated_burst = 10_000;
    })
    .await?;
    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    caf_client.publish(caf("o-caf-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("o-caf-2", "2026-09-20T09:00:01+02:00", fontaine(), "CJT", sdd(true))).await?;
    let url = format!("http://{}/api/v1/openapi.json", hub.running.http_addr);
    let key = hub.credentials_dir.join("oidc-dev-key.der");
    let work = hub.credentials_dir.join("schemathesis");
    std::fs::create_dir_all(&work)?;
    // Seeds differ from one run of the suite to the next (more of the input space over time);
    // each is printed, so a failure can be replayed with `--seed`.
    let first_seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() % 1_000_000_000;
    let seeds: Vec<u64> = (0..RUNS).map(|run| first_seed + run * 7919).collect();
    eprintln!("schemathesis seeds: {seeds:?}");
    for agent in [
        "cd52.orientation",
        "cd52.rsa",
        "cd75.orientation",
        "caf521.agent",
        "ft52.conseiller",
        "agent-cd52-0042",
        "cd52.dpo",
    ] {
        let token = passerelle::dev_token(&hub.config, agent, &key, 1800)?;
        for seed in &seeds {
            let output = Command::new(&schemathesis)
                .current_dir(&work)
                .arg("--config-file")
                .arg(repo_root().join("services/api/schemathesis.toml"))
                .args(["run", &url, "--max-examples", "20", "--seed", &seed.to_string(), "-H"])
                .arg(format!("Authorization: Bearer {token}"))
                .env("NO_COLOR", "1")
                .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
                .env("PYTHONPATH", repo_root().join("tests/python"))
                .output()?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            anyhow::ensure!(
                output.status.success(),
                "schemathesis as {agent} with seed {seed} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let summary = stdout.lines().rev().find(|line| line.contains("passed")).unwrap_or_default();
            eprintln!("schemathesis as {agent}, seed {seed}: {}", summary.trim());
        }
    }
    // Schemathesis' own requests were journaled like any other.
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM journal.entries").fetch_one(&hub.running.pool).await?;
    assert!(rows > 100, "{rows} journal rows");
    hub.running.shutdown().await
}
