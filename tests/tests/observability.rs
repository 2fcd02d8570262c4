//! Ops see the flow: an end-to-end run moves the counters on /metrics, and every metric name the
//! dashboards and alert rules use is one the hub exports.

mod fixtures;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use fixtures::*;
use passerelle_e2e::{TestHub, repo_root};
use passerelle_ingest::proto::allocataire_ingest_client::AllocataireIngestClient;

/// The value of one sample of the Prometheus text output (0 when absent).
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every `passerelle_…` metric family exported (from the `# TYPE` lines).
fn families(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Every `passerelle_…` name these files use, histogram suffixes removed.
fn names_used(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|token| token.starts_with("passerelle_"))
        .map(|name| {
            ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name).to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_during_a_run_and_dashboards_use_only_exported_names() -> anyhow::Result<()> {
    let hub = TestHub::spawn().await?;
    let http = reqwest::Client::new();
    let scrape = async || -> anyhow::Result<String> {
        Ok(http.get(format!("http://{}/metrics", hub.running.ops_addr)).send().await?.text().await?)
    };
    let before = scrape().await?;
    let ready = http.get(format!("http://{}/readyz", hub.running.ops_addr)).send().await?;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await?, "ready", "database reachable, migrations applied, broker reachable");
    assert_eq!(http.get(format!("http://{}/healthz", hub.running.http_addr)).send().await?.text().await?, "ok");
    // Metrics and readiness are the operators': not on the public listener.
    for path in ["/metrics", "/readyz"] {
        let public = http.get(format!("http://{}{path}", hub.running.http_addr)).send().await?;
        assert_eq!(public.status(), 404, "{path} is not served on the public listener");
    }
    // The gRPC health service of the API's face (ingestion's is tested with it).
    let mut health = tonic_health::pb::health_client::HealthClient::new(hub.api_channel()?);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest { service: "passerelle.dossier.v1.DossierService".into() })
        .await?
        .into_inner();
    assert_eq!(serving.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    let mut caf_client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    caf_client.publish(caf("m-1", "2026-09-20T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    caf_client.publish(caf("m-2", "2026-09-20T09:00:01+02:00", legrand(), "DEM", sdd(true))).await?;
    let mut invalid = caf("m-3", "2026-09-20T09:00:02+02:00", legrand(), "DEM", sdd(true));
    invalid.household = None;
    assert!(caf_client.publish(invalid).await.is_err(), "an event without household is refused");
    // A poison record: a dead letter.
    hub.publish_poison(passerelle_domain::event::Family::Allocataire, "nir:poison").await?;

    // Wait for the projection, then read through the API (a 200 with withheld sections, a 404).
    let deadline = Instant::now() + Duration::from_secs(30);
    let person = loop {
        let keys = hub.subject_keys();
        let key = keys.nir(&passerelle_domain::Nir::parse(NIR_LEGRAND)?);
        let dead: (i64,) = sqlx::query_as("SELECT count(*) FROM dead_letters").fetch_one(&hub.running.pool).await?;
        if let Some(person) = passerelle_readmodel::person_of_subject(&hub.running.pool, key.as_str()).await?
            && dead.0 == 1
            && passerelle_readmodel::dossier(&hub.running.pool, person).await?.is_some_and(|d| d.sdd)
        {
            break person;
        }
        anyhow::ensure!(Instant::now() < deadline, "not projected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let token =
        passerelle::dev_token(&hub.config, "cd52.orientation", &hub.credentials_dir.join("oidc-dev-key.der"), 300)?;
    for id in [person, uuid::Uuid::now_v7()] {
        http.get(format!("http://{}/api/v1/dossiers/{id}", hub.running.http_addr))
            .bearer_auth(&token)
            .header("X-Motif-Acces", "orientation")
            .send()
            .await?;
    }
    caf_client.publish(caf("m-4", "2026-09-21T09:00:00+02:00", legrand(), "DEM", sdd(true))).await?;
    // The lag is measured every 15 s, off the projector's loop: wait for a measure at rest.
    let deadline = Instant::now() + Duration::from_secs(40);
    let after = loop {
        let text = scrape().await?;
        if sample(&text, "passerelle_projector_events_applied_total", &[]) >= 3.0
            && text.contains("passerelle_projector_lag_messages{")
            && sample(&text, "passerelle_projector_lag_messages", &[]) == 0.0
        {
            break text;
        }
        anyhow::ensure!(Instant::now() < deadline, "the projector's metrics did not move:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let moved = |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    assert_eq!(moved("passerelle_ingest_events_accepted_total", &[("family", "allocataire")]), 3.0);
    assert_eq!(
        moved("passerelle_ingest_events_refused_total", &[("family", "allocataire"), ("reason", "invalid")]),
        1.0
    );
    assert_eq!(moved("passerelle_ingest_publish_seconds_count", &[("family", "allocataire")]), 3.0);
    assert_eq!(moved("passerelle_projector_events_applied_total", &[("projection", "dossier")]), 3.0);
    assert_eq!(moved("passerelle_projector_dead_letters_total", &[("reason", "undecodable")]), 1.0);
    assert!(moved("passerelle_projector_batch_size_count", &[]) >= 1.0);
    assert_eq!(sample(&after, "passerelle_projector_lag_messages", &[]), 0.0, "caught up");
    assert!(
        sample(&after, "passerelle_projector_territory_last_event_timestamp_seconds", &[("territory", "52")]) > 1.7e9
    );
    assert_eq!(
        moved("passerelle_api_requests_total", &[("route", "/api/v1/dossiers/{person_id}"), ("status", "200")]),
        1.0
    );
    assert_eq!(
        moved("passerelle_api_requests_total", &[("route", "/api/v1/dossiers/{person_id}"), ("status", "404")]),
        1.0
    );
    assert_eq!(moved("passerelle_api_policy_refusals_total", &[("reason", "not_found")]), 1.0);
    assert_eq!(
        moved("passerelle_api_sections_withheld_total", &[("section", "diagnostic"), ("motif", "consentement")]),
        1.0
    );
    assert_eq!(moved("passerelle_api_journal_writes_total", &[("action", "dossier")]), 2.0);

    // Dashboards and alert rules use only exported names (the unlinked-persons gauge is set by a
    // periodic task; it is registered with the others).
    passerelle_projector::metrics::refresh_unlinked(&hub.running.pool).await?;
    let exported = families(&scrape().await?);
    let mut used = BTreeSet::new();
    let root = repo_root().join("infra");
    used.extend(names_used(&std::fs::read_to_string(root.join("prometheus/alerts.yml"))?));
    for entry in std::fs::read_dir(root.join("grafana/dashboards"))? {
        used.extend(names_used(&std::fs::read_to_string(entry?.path())?));
    }
    assert!(used.len() >= 10, "{used:?}");
    let unknown: Vec<&String> = used.iter().filter(|name| !exported.contains(*name)).collect();
    assert!(unknown.is_empty(), "dashboards or alerts use names the hub does not export: {unknown:?}");
    let documented = std::fs::read_to_string(repo_root().join("docs/metrics.md"))?;
    let undocumented: Vec<&String> =
        exported.iter().filter(|name| name.starts_with("passerelle_") && !documented.contains(name.as_str())).collect();
    assert!(undocumented.is_empty(), "exported but not in docs/metrics.md: {undocumented:?}");
    hub.running.shutdown().await
}

/// Every alert of alerts.yml has its promtool unit test (run by infra/test.sh) firing on the
/// series it is for and silent on a healthy one; and the series the alerts read exist from the
/// start, at zero, so that an increase() or a rate sees the first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_is_tested_and_its_series_exist_from_the_start() -> anyhow::Result<()> {
    let rules = std::fs::read_to_string(repo_root().join("infra/prometheus/alerts.yml"))?;
    let tests = std::fs::read_to_string(repo_root().join("infra/prometheus/alerts_test.yml"))?;
    let alerts: Vec<&str> = rules.lines().filter_map(|line| line.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for alert in &alerts {
        let cases: Vec<&str> =
            tests.split("alertname: ").skip(1).filter(|case| case.starts_with(&format!("{alert}\n"))).collect();
        assert!(cases.iter().any(|case| case.contains("exp_labels")), "{alert} has no test where it fires");
        assert!(
            cases.iter().any(|case| case.lines().nth(1).is_some_and(|line| line.trim() == "exp_alerts: []")),
            "{alert} has no test where it stays silent"
        );
    }

    let hub = TestHub::spawn().await?;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = http.get(format!("http://{}/metrics", hub.running.ops_addr)).send().await?.text().await?;
        let present = |series: &str| metrics.lines().any(|line| line.starts_with(series));
        let wanted = [
            "passerelle_projector_dead_letters_total{projection=\"dossier\",reason=\"conflict\"} 0",
            "passerelle_projector_dead_letters_total{projection=\"dossier\",reason=\"undecodable\"} 0",
            "passerelle_ingest_events_accepted_total{family=\"orientation\"}",
            "passerelle_ingest_events_refused_total{family=\"allocataire\",reason=\"unavailable\"}",
            "passerelle_api_rate_limited_total{limit=\"per_agent\"}",
        ];
        if wanted.iter().all(|series| present(series)) {
            break;
        }
        let missing: Vec<&&str> = wanted.iter().filter(|series| !present(series)).collect();
        assert!(Instant::now() < deadline, "series missing at start: {missing:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    hub.running.shutdown().await
}

/// The firing or pending alerts named `name` that Prometheus holds (`state` of each).
async fn alert_states(http: &reqwest::Client, prometheus: &str, name: &str) -> anyhow::Result<Vec<String>> {
    let body: serde_json::Value = http.get(format!("{prometheus}/api/v1/alerts")).send().await?.json().await?;
    Ok(body["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|alert| alert["labels"]["alertname"] == name)
        .filter_map(|alert| alert["state"].as_str().map(str::to_owned))
        .collect())
}

/// The ops drill, with Debian's real Prometheus scraping a live hub whose projector runs in
/// another hub process: the projector stops, institutions keep pushing, the lag alert fires
/// (measured by the process still running); the projector comes back, the alert resolves. The
/// committed rule runs with its duration and threshold scaled down (10 min and 5,000 records
/// are for production, not for a test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_lag_alert_when_the_projector_stops_and_resolves_it_when_it_is_back() -> anyhow::Result<()>
{
    let prometheus_bin = std::path::Path::new("/usr/bin/prometheus");
    anyhow::ensure!(prometheus_bin.exists(), "Debian's prometheus is missing: infra/test.sh installs it");
    let hub = TestHub::spawn_without_projector_configured(|config| config.lag_probe_seconds = 1).await?;
    let projector_config = hub.config.clone();
    let projector = passerelle::start_services(&projector_config, passerelle::Services::ALL).await?;

    // The committed rule, scaled down; the drill fails if the rule it scales is not there.
    let rules = std::fs::read_to_string(repo_root().join("infra/prometheus/alerts.yml"))?;
    let lagging = rules.find("- alert: PasserelleProjectionLagging").expect("the lag alert");
    let (before, after) = rules.split_at(lagging);
    let scaled = after
        .replacen("(passerelle_projector_lag_messages) > 5000", "(passerelle_projector_lag_messages) > 20", 1)
        .replacen("for: 10m", "for: 3s", 1);
    anyhow::ensure!(scaled != after, "the lag alert's threshold or duration changed: update the drill");
    let dir = hub.credentials_dir.join("prometheus-drill");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("alerts.yml"), format!("{before}{scaled}"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\nscrape_configs:\n  - job_name: passerelle\n    static_configs:\n      - targets: [\"{}\"]\n",
            hub.running.ops_addr
        ),
    )?;
    let mut server = tokio::process::Command::new(prometheus_bin)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let prometheus = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let until = async |what: &str, mut check: Box<dyn FnMut(Vec<String>) -> bool + Send>| -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let states = alert_states(&http, &prometheus, "PasserelleProjectionLagging").await.unwrap_or_default();
            if check(states.clone()) {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(90), "{what}: still {states:?} after 90 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    // Prometheus up and scraping; with the projector running the alert is silent.
    let mut client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    client.publish(caf("drill-0", "2026-09-01T09:00:00+02:00", legrand(), "DEM", right_opened())).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up: serde_json::Value = match http.get(format!("{prometheus}/api/v1/query?query=up")).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if up["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "Prometheus never scraped the hub: {up}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(alert_states(&http, &prometheus, "PasserelleProjectionLagging").await?, Vec::<String>::new());

    // The projector stops; facts keep coming (one person: one partition).
    projector.shutdown().await?;
    for n in 1..=30 {
        client
            .publish(caf(&format!("drill-{n}"), "2026-09-02T09:00:00+02:00", legrand(), "DEM", sdd(n % 2 == 0)))
            .await?;
    }
    let fired = until("the lag alert firing", Box::new(|states| states.iter().any(|s| s == "firing"))).await?;

    // The projector is back: it catches up and the alert resolves.
    let projector = passerelle::start_services(&projector_config, passerelle::Services::ALL).await?;
    let resolved = until("the lag alert resolving", Box::new(|states| states.is_empty())).await?;
    eprintln!(
        "drill: the lag alert fired {:.1} s after the projector stopped and resolved {:.1} s after it came back",
        fired.as_secs_f64(),
        resolved.as_secs_f64()
    );
    server.kill().await.ok();
    projector.shutdown().await?;
    hub.running.shutdown().await
}
