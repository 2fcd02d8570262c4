//! The `passerelle` command line as an operator runs it: exit statuses and messages.

use std::process::Command;

use passerelle_e2e::{TestHub, repo_root};

fn passerelle() -> anyhow::Result<Command> {
    let binary = repo_root().join("target/debug/passerelle");
    anyhow::ensure!(binary.exists(), "{} is missing: build it first (infra/test.sh does)", binary.display());
    Ok(Command::new(binary))
}

fn import(
    hub: &TestHub,
    kind: &str,
    file: &std::path::Path,
    institution: &str,
) -> anyhow::Result<std::process::Output> {
    Ok(passerelle()?
        .args(["import", kind, &file.display().to_string(), "--quiet", "--hub", &hub.endpoint(), "--as", institution])
        .arg("--credentials")
        .arg(&hub.credentials_dir)
        .output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_exits_0_when_all_is_accepted_1_when_the_file_is_invalid_3_when_facts_are_refused()
-> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let sample = repo_root().join("tests/fixtures/cnaf/RSABEM.xml");

    let ok = tokio::task::block_in_place(|| import(&hub, "cnaf-flux", &sample, "caf-521"))?;
    let summary = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{summary}{}", String::from_utf8_lossy(&ok.stderr));
    assert!(summary.starts_with("2 foyers, 3 persons; 12 events sent, 12 accepted, 0 refused"), "{summary}");
    assert!(summary.contains("warning: TransmissionFlux declares 1 dossiers, the file holds 2"), "{summary}");

    let dir = std::env::temp_dir().join(format!("passerelle-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let bytes = std::fs::read(&sample)?;
    let truncated = dir.join("truncated.xml");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3])?;
    let invalid = tokio::task::block_in_place(|| import(&hub, "cnaf-flux", &truncated, "caf-521"))?;
    let message = String::from_utf8_lossy(&invalid.stderr);
    assert_eq!(invalid.status.code(), Some(1));
    assert!(message.contains("import failed: truncated.xml:"), "{message}");

    let csv = dir.join("extract.csv");
    std::fs::write(
        &csv,
        "identifiant_ft;code_commune;date_inscription;categorie\n12345678901;52121;2026-10-01;1\n12345678902;52121;2026-10-01;9\n",
    )?;
    let partly = tokio::task::block_in_place(|| import(&hub, "ft-csv", &csv, "france-travail"))?;
    let summary = String::from_utf8_lossy(&partly.stdout);
    assert_eq!(partly.status.code(), Some(3), "{summary}");
    assert!(summary.contains("1 accepted, 1 refused") && summary.contains("inscription.categorie"), "{summary}");

    let unknown = tokio::task::block_in_place(|| import(&hub, "ft-csv", &csv, "nobody"))?;
    assert_eq!(unknown.status.code(), Some(1));
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(message.contains("nobody.pem") && message.contains("infra/dev-pki.sh"), "{message}");
    hub.running.shutdown().await
}
