//! Limits on the API's and the console's HTTP face, tried as an attacker would: a flood of
//! calls without a valid token from one address, one agent's information system reading as
//! fast as it can, a body far larger than any request needs. Each gets 429 (with Retry-After) or
//! 413, the journal stays bounded, and other callers are served meanwhile.

use std::time::Duration;

use passerelle_e2e::TestHub;

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_get_429_with_retry_after_and_the_journal_stays_bounded() -> anyhow::Result<()> {
    let hub = TestHub::spawn_configured(|config| {
        config.api.limits.unauthenticated_per_second = 1;
        config.api.limits.unauthenticated_burst = 10;
        config.api.limits.per_agent_per_second = 1;
        config.api.limits.per_agent_burst = 5;
    })
    .await?;
    let base = format!("http://{}", hub.running.http_addr);
    let http = reqwest::Client::new();
    let pool = hub.running.pool.clone();
    let metrics_before = http.get(format!("{base}/metrics")).send().await?.text().await?;
    assert_eq!(
        metric(&metrics_before, "passerelle_api_rate_limited_total{limit=\"unauthenticated_per_address\"}"),
        0.0,
        "the series exists from the start, at zero"
    );

    // 200 calls with a forged token from one address.
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let mut retry_after = None;
    for _ in 0..200 {
        let response = http
            .get(format!("{base}/api/v1/dossiers/{}", uuid::Uuid::new_v4()))
            .bearer_auth("eyJhbGciOiJFUzI1NiJ9.e30.forged")
            .header("X-Motif-Acces", "orientation")
            .send()
            .await?;
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        }
        *statuses.entry(response.status().as_u16()).or_default() += 1;
    }
    eprintln!("forged-token flood: {statuses:?}");
    assert!(statuses.get(&429).copied().unwrap_or(0) >= 150, "most of the flood is turned away: {statuses:?}");
    assert!(retry_after.is_some_and(|seconds| seconds.parse::<u64>().is_ok_and(|s| s >= 1)), "429 says when to retry");
    let (journaled,): (i64,) = sqlx::query_as("SELECT count(*) FROM journal.entries WHERE outcome = 'unauthenticated'")
        .fetch_one(&pool)
        .await?;
    assert!((10..=20).contains(&journaled), "the flood left a bounded number of journal rows: {journaled}");

    // One agent reading as fast as it can: over its burst it waits; another agent is served.
    let key = hub.credentials_dir.join("oidc-dev-key.der");
    let busy = passerelle::dev_token(&hub.config, "cd52.orientation", &key, 600)?;
    let other = passerelle::dev_token(&hub.config, "cd52.rsa", &key, 600)?;
    let read = |token: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1/dossiers/{}", uuid::Uuid::new_v4());
        async move {
            http.get(url)
                .bearer_auth(token)
                .header("X-Motif-Acces", "orientation")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let mut busy_statuses = Vec::new();
    for _ in 0..20 {
        busy_statuses.push(read(busy.clone()).await?);
    }
    assert_eq!(busy_statuses.iter().filter(|s| **s == 404).count(), 5, "the burst is served: {busy_statuses:?}");
    assert_eq!(busy_statuses.iter().filter(|s| **s == 429).count(), 15, "then the agent waits: {busy_statuses:?}");
    assert_eq!(read(other).await?, 404, "another agent is served meanwhile");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(read(busy).await?, 404, "after the wait the agent is served again");

    // A body far larger than a search needs.
    let large = serde_json::json!({"motif": "orientation", "nom": "A".repeat(200_000), "date_naissance": "1980-01-01"});
    let token = passerelle::dev_token(&hub.config, "cd52.dpo", &key, 600)?;
    let response =
        http.post(format!("{base}/api/v1/personnes/recherche")).bearer_auth(token).json(&large).send().await?;
    assert_eq!(response.status(), 413, "a body over api.limits.body_bytes is refused");

    let metrics_after = http.get(format!("{base}/metrics")).send().await?.text().await?;
    assert!(metric(&metrics_after, "passerelle_api_rate_limited_total{limit=\"per_agent\"}") >= 15.0);
    assert!(
        metric(&metrics_after, "passerelle_api_rate_limited_total{limit=\"unauthenticated_per_address\"}") >= 150.0
    );
    hub.running.shutdown().await
}
