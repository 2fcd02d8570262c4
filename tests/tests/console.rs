//! The web console end to end, in Debian's Chromium: a hub holding the demo's dossiers, and a
//! Playwright script (tests/python/console_browser.py) that signs in as each role through the
//! development identity provider and does the agents' work, with axe-core on every page. Then
//! the journal: the console's reads are there, through the same policy, channel `console`.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use passerelle_e2e::{TestHub, repo_root};

const NIR_MARTIN: &str = "1850752121003";
const NIR_DURAND: &str = "2870552121004";

fn python() -> anyhow::Result<PathBuf> {
    let python = std::env::var("PASSERELLE_TEST_PYTHON").map_err(|_| {
        anyhow::anyhow!(
            "PASSERELLE_TEST_PYTHON is not set: run the tests with infra/test.sh, which installs Playwright"
        )
    })?;
    anyhow::ensure!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's Chromium is missing: infra/test.sh installs it (apt-get install chromium)"
    );
    Ok(PathBuf::from(python))
}

/// Persons added to the demo so that a work queue has more than one page: SDD in Haute-Marne
/// since September, never oriented, living in another commune than the demo's.
const WAITING: usize = 25;

async fn push_waiting_persons(hub: &TestHub) -> anyhow::Result<usize> {
    use passerelle_ingest::proto::{
        AllocataireEvent, Household, Location, SddChanged, allocataire_event::Fact,
        allocataire_ingest_client::AllocataireIngestClient,
    };
    let mut caf = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    // Twins the hub cannot tell apart from their identité pivot (infra/dev/persons.toml).
    for (index, order) in ["101", "102"].into_iter().enumerate() {
        caf.publish(AllocataireEvent {
            event_id: format!("console-twin-{index}"),
            occurred_at: "2026-09-01T09:00:00+02:00".into(),
            person: passerelle::demo::person(&format!("1900352121{order}"), "", "JUMEAU", "Alex", "1990-03-15"),
            household: Some(Household {
                organisme: "521".into(),
                matricule: format!("{}", 4_000_000 + index),
                role: "DEM".into(),
            }),
            location: Some(Location { receiving_authority: "052".into(), commune: "52332".into() }),
            corrects_event_id: String::new(),
            fact: Some(Fact::SddChanged(SddChanged { soumis: true })),
        })
        .await?;
    }
    for index in 0..WAITING {
        let matricule = format!("{}", 3_000_000 + index);
        caf.publish(AllocataireEvent {
            event_id: format!("console-waiting-{index}"),
            occurred_at: "2026-09-01T09:00:00+02:00".into(),
            person: passerelle::demo::person(
                &format!("1800552060{:03}", 100 + index),
                "",
                "ATTENTE",
                "Camille",
                "1980-05-01",
            ),
            household: Some(Household { organisme: "521".into(), matricule, role: "DEM".into() }),
            location: Some(Location { receiving_authority: "052".into(), commune: "52060".into() }),
            corrects_event_id: String::new(),
            fact: Some(Fact::SddChanged(SddChanged { soumis: true })),
        })
        .await?;
    }
    Ok(WAITING + 2)
}

/// A hub holding the demo (and the waiting persons), projected; returns it with Paul Martin's
/// person id.
async fn hub_with_the_demo(theme: passerelle_web::Theme) -> anyhow::Result<(TestHub, uuid::Uuid)> {
    let hub = TestHub::spawn_configured(|config| config.web.theme = theme).await?;
    let pushed =
        passerelle::demo::push(&hub.endpoint(), &hub.credentials_dir).await? + push_waiting_persons(&hub).await?;
    let pool = hub.running.pool.clone();
    let key = hub.subject_keys().nir(&passerelle_domain::Nir::parse(NIR_MARTIN)?).as_str().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let martin = loop {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM person_events").fetch_one(&pool).await?;
        let person = passerelle_readmodel::person_of_subject(&pool, &key).await?;
        if count >= pushed as i64
            && let Some(person) = person
        {
            break person;
        }
        anyhow::ensure!(Instant::now() < deadline, "the demo was not projected ({count} of {pushed} events)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A record about Julie Durand that cannot be read: her dossier is flagged incomplete.
    let durand = hub.subject_keys().nir(&passerelle_domain::Nir::parse(NIR_DURAND)?).as_str().to_owned();
    hub.publish_poison(passerelle_domain::event::Family::Allocataire, &durand).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let person = passerelle_readmodel::person_of_subject(&pool, &durand).await?.expect("Durand is projected");
        let (incomplete,): (bool,) = sqlx::query_as("SELECT incomplete FROM dossiers WHERE person_id = $1")
            .bind(person)
            .fetch_one(&pool)
            .await?;
        if incomplete {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the poison record did not flag the dossier incomplete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((hub, martin))
}

/// Runs the browser checks against `hub`; screenshots only when asked and `screenshots`.
async fn browse(hub: &TestHub, martin: uuid::Uuid, theme: &str, screenshots: bool) -> anyhow::Result<()> {
    let python = python()?;
    let base = format!("http://{}", hub.running.http_addr);
    let mut command = Command::new(&python);
    command
        .arg(repo_root().join("tests/python/console_browser.py"))
        .arg(&base)
        .arg("--martin")
        .arg(martin.to_string())
        .arg("--theme")
        .arg(theme)
        .arg("--waiting")
        .arg((WAITING + 2).to_string());
    if let (true, Ok(dir)) = (screenshots, std::env::var("PASSERELLE_SCREENSHOTS")) {
        std::fs::create_dir_all(&dir)?;
        command.arg("--screenshots").arg(dir);
    }
    run_script(command, "the browser checks").await
}

/// Runs a browser script, printing its checks; fails with its output when it fails.
async fn run_script(mut command: Command, what: &str) -> anyhow::Result<()> {
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    anyhow::ensure!(output.status.success(), "{what} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_work_in_the_console_exactly_as_the_policy_lets_them() -> anyhow::Result<()> {
    let (hub, martin) = hub_with_the_demo(passerelle_web::Theme::Etat).await?;
    let pool = hub.running.pool.clone();
    browse(&hub, martin, "etat", true).await?;
    // The person's space, on the same hub: the agents above have read Paul Martin's dossier.
    let durand_key = hub.subject_keys().nir(&passerelle_domain::Nir::parse(NIR_DURAND)?).as_str().to_owned();
    let durand = passerelle_readmodel::person_of_subject(&pool, &durand_key).await?.expect("Durand is projected");
    let mut command = Command::new(python()?);
    command
        .arg(repo_root().join("tests/python/person_browser.py"))
        .arg(format!("http://{}", hub.running.http_addr))
        .arg("--martin")
        .arg(martin.to_string())
        .arg("--durand")
        .arg(durand.to_string());
    if let Ok(dir) = std::env::var("PASSERELLE_SCREENSHOTS") {
        command.arg("--screenshots").arg(dir);
    }
    run_script(command, "the person's space checks").await?;
    let (identifications,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM journal.entries WHERE channel = 'espace_personne' AND action = 'identification'
           AND ((outcome = 'matched' AND person_id = $1) OR (outcome IN ('not_identified', 'ambiguous') AND person_id IS NULL))",
    )
    .bind(martin)
    .fetch_one(&pool)
    .await?;
    assert_eq!(identifications, 3, "each identification is journaled with its outcome, a person id only when matched");
    let (exports,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM journal.entries WHERE channel = 'espace_personne' AND action = 'export_personne' AND person_id = $1",
    )
    .bind(martin)
    .fetch_one(&pool)
    .await?;
    assert!(exports >= 1, "the download of one's data is journaled");
    // The person's choices are facts on the log whose source is the person, each about him
    // only (a form naming another person changed nothing of hers).
    let choices: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT person_id, event_type FROM person_events WHERE source = 'espace-personne' ORDER BY occurred_at",
    )
    .fetch_all(&pool)
    .await?;
    assert!(choices.len() >= 6, "each choice is one fact ({choices:?})");
    assert!(choices.iter().all(|(person, _)| *person == martin), "every choice is about the signed-in person only");
    let (durand_opposition, durand_choices): (bool, i64) = sqlx::query_as(
        "SELECT d.opposition, (SELECT count(*) FROM person_events e WHERE e.person_id = d.person_id AND e.source = 'espace-personne')
         FROM dossiers d WHERE d.person_id = $1",
    )
    .bind(durand)
    .fetch_one(&pool)
    .await?;
    // Her département recorded her opposition in the demo; his choices changed nothing of it.
    assert!(durand_opposition && durand_choices == 0, "nothing was recorded about his spouse");

    // The console's reads went through the API's journal, naming the console.
    let (reads,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM journal.entries
         WHERE channel = 'console' AND action = 'dossier' AND agent_uid = 'cd52.orientation' AND person_id = $1
           AND purpose = 'orientation' AND outcome = 'shown'",
    )
    .bind(martin)
    .fetch_one(&pool)
    .await?;
    assert!(reads >= 2, "the orientation agent's dossier reads are journaled with the console as channel ({reads})");
    let (out_of_reach,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM journal.entries WHERE channel = 'console' AND agent_uid = 'cd75.orientation' AND action = 'recherche' AND outcome = 'none'",
    )
    .fetch_one(&pool)
    .await?;
    assert!(out_of_reach >= 2, "the other territory's searches are journaled as finding nobody ({out_of_reach})");
    let (refused,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM journal.entries WHERE channel = 'console' AND agent_uid = 'cd52.dpo' AND outcome LIKE 'refused:%'",
    )
    .fetch_one(&pool)
    .await?;
    assert!(refused >= 1, "the DPO's refused dossier read is journaled ({refused})");
    let (exports,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM journal.entries WHERE channel = 'console' AND action = 'export' AND cardinality(persons_found) = 1
           AND persons_found[1] IN (SELECT person_id FROM dossiers WHERE territory = '52')",
    )
    .fetch_one(&pool)
    .await?;
    assert!(exports >= 1, "the queue's export is journaled as one entry naming the persons exported ({exports})");
    // Nothing personal in the sessions the hub keeps.
    let (sessions,): (String,) =
        sqlx::query_as("SELECT coalesce(string_agg(record::text, ' '), '') FROM web.sessions").fetch_one(&pool).await?;
    assert!(!sessions.contains(NIR_MARTIN) && !sessions.contains("MARTIN"), "no NIR or name in the stored sessions");
    // Nor in the logs and spans the hub wrote while the agents worked.
    let spans: String = passerelle_e2e::logs::spans().iter().map(|span| format!("{span:?}\n")).collect();
    for (place, text) in [("logs", passerelle_e2e::logs::captured()), ("spans", spans)] {
        for needle in [NIR_MARTIN, "2870552121004", "MARTIN", "DURAND", "ATTENTE", "1985-07-12", "1987-05-03"] {
            assert!(!text.contains(needle), "{needle:?} appears in the {place}");
        }
    }
    hub.running.shutdown().await
}

/// A département-run deployment: the same pages and checks, without the Marianne block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_neutral_theme_passes_the_same_checks_without_the_state_identity() -> anyhow::Result<()> {
    let (hub, martin) = hub_with_the_demo(passerelle_web::Theme::Neutre).await?;
    browse(&hub, martin, "neutre", false).await?;
    hub.running.shutdown().await
}
