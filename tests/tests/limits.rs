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
    let metrics_before = http.get(format!("http://{}/metrics", hub.running.ops_addr)).send().await?.text().await?;
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

    let metrics_after = http.get(format!("http://{}/metrics", hub.running.ops_addr)).send().await?.text().await?;
    assert!(metric(&metrics_after, "passerelle_api_rate_limited_total{limit=\"per_agent\"}") >= 15.0);
    assert!(
        metric(&metrics_after, "passerelle_api_rate_limited_total{limit=\"unauthenticated_per_address\"}") >= 150.0
    );
    hub.running.shutdown().await
}

/// The gRPC ingestion API, per institution: a unary flood over the rate gets RESOURCE_EXHAUSTED
/// naming the limit, while another institution is served; a batch stream past its allowance
/// ends with RESOURCE_EXHAUSTED after answering the events before; a stream beyond the
/// institution's open streams is refused; a message over the size limit, and an address of too
/// many lines, are refused before anything is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn institutions_over_their_limits_get_resource_exhausted_naming_the_limit() -> anyhow::Result<()> {
    use passerelle_ingest::proto::{
        Address, AddressChanged, AllocataireEvent, BatchReply, Household, Location, SddChanged,
        allocataire_event::Fact, allocataire_ingest_client::AllocataireIngestClient, batch_reply,
    };
    let hub = TestHub::spawn_configured(|config| {
        config.ingest.limits.events_per_second = 1;
        config.ingest.limits.events_burst = 1; // raised to one chunk (64)
        config.ingest.limits.events_per_stream = 10;
        config.ingest.limits.streams_per_institution = 2;
        config.ingest.limits.message_bytes = 4096;
    })
    .await?;
    let event = |index: usize, fact: Fact| AllocataireEvent {
        event_id: format!("limits-{index}"),
        occurred_at: "2026-09-01T09:00:00+02:00".into(),
        person: passerelle::demo::person(
            &format!("1800552060{:03}", 100 + index % 800),
            "",
            "LIMITE",
            "Alex",
            "1980-05-01",
        ),
        household: Some(Household {
            organisme: "521".into(),
            matricule: format!("{}", 5_000_000 + index),
            role: "DEM".into(),
        }),
        location: Some(Location { receiving_authority: "052".into(), commune: "52060".into() }),
        corrects_event_id: String::new(),
        fact: Some(fact),
    };
    let sdd = || Fact::SddChanged(SddChanged { soumis: true });
    let mut caf = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);

    // A message over the size limit, and an address of eight lines: refused, nothing published.
    let mut huge = event(900, sdd());
    if let Some(person) = huge.person.as_mut() {
        person.nom = "X".repeat(8_000);
    }
    let refused = caf.publish(huge).await.expect_err("over the message size");
    assert!(
        matches!(refused.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
            && refused.message().contains("4096"),
        "the refusal names the limit: {refused:?}"
    );
    let eight_lines = event(
        901,
        Fact::AddressChanged(AddressChanged {
            address: Some(Address {
                lines: (1..=8).map(|n| format!("ligne {n}")).collect(),
                code_postal: "52000".into(),
                commune: "52121".into(),
            }),
            ..AddressChanged::default()
        }),
    );
    let refused = caf.publish(eight_lines).await.expect_err("too many address lines");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("address_changed.address.lines"), "the field is named: {}", refused.message());

    // A stream past its allowance: ten events answered, then RESOURCE_EXHAUSTED.
    let events: Vec<AllocataireEvent> = (0..15).map(|index| event(index, sdd())).collect();
    let mut replies = caf.publish_batch(futures::stream::iter(events)).await?.into_inner();
    let mut answered: Vec<BatchReply> = Vec::new();
    let ended = loop {
        match replies.message().await {
            Ok(Some(reply)) => answered.push(reply),
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    assert_eq!(answered.len(), 10, "the events within the allowance are answered");
    assert!(
        answered.iter().all(|reply| reply.status == batch_reply::Status::Accepted as i32),
        "{:?}",
        answered.iter().map(|reply| (&reply.event_id, reply.status, &reply.message)).collect::<Vec<_>>()
    );
    let ended = ended.expect("the stream ends with a status");
    assert_eq!(ended.code(), tonic::Code::ResourceExhausted);
    assert!(ended.message().contains("limit events_per_stream"), "{}", ended.message());

    // Two streams held open, a third refused.
    let (hold_a, rx_a) = tokio::sync::mpsc::channel::<AllocataireEvent>(1);
    let (hold_b, rx_b) = tokio::sync::mpsc::channel::<AllocataireEvent>(1);
    let mut first = caf.clone();
    let mut second = caf.clone();
    let open_a = tokio::spawn(async move {
        first.publish_batch(tokio_stream::wrappers::ReceiverStream::new(rx_a)).await.map(|r| r.into_inner())
    });
    let open_b = tokio::spawn(async move {
        second.publish_batch(tokio_stream::wrappers::ReceiverStream::new(rx_b)).await.map(|r| r.into_inner())
    });
    let (stream_a, stream_b) = (open_a.await??, open_b.await??);
    let third = caf.publish_batch(futures::stream::iter(vec![event(50, sdd())])).await;
    let refused = match third {
        Err(status) => status,
        Ok(response) => {
            let mut replies = response.into_inner();
            replies.message().await.expect_err("a third stream is refused")
        }
    };
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(refused.message().contains("limit streams_per_institution"), "{}", refused.message());
    drop((hold_a, hold_b, stream_a, stream_b));

    // A unary flood: the burst (one chunk, 64) passes, then RESOURCE_EXHAUSTED with when to retry;
    // another institution is served meanwhile.
    let mut limited = None;
    for index in 100..200 {
        if let Err(status) = caf.publish(event(index, sdd())).await {
            limited = Some(status);
            break;
        }
    }
    let limited = limited.expect("the flood is limited");
    assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
    assert!(
        limited.message().contains("limit events_per_second") && limited.message().contains("retry in"),
        "{}",
        limited.message()
    );
    let mut msa = AllocataireIngestClient::new(hub.channel_as("msa-052").await?);
    let other = msa
        .publish(AllocataireEvent {
            household: Some(Household { organisme: "052".into(), matricule: "7000001".into(), role: "DEM".into() }),
            ..event(300, sdd())
        })
        .await;
    assert!(other.is_ok(), "another institution is not held back: {other:?}");
    let metrics = reqwest::get(format!("http://{}/metrics", hub.running.ops_addr)).await?.text().await?;
    for limit in ["events_per_second", "streams_per_institution", "events_per_stream"] {
        assert!(
            metric(&metrics, &format!("passerelle_ingest_limited_total{{limit=\"{limit}\"}}")) >= 1.0,
            "{limit} refusals are counted"
        );
    }
    hub.running.shutdown().await
}

/// The public listener over TLS (`http_tls`): the API and the console answer over HTTPS only,
/// the session cookie is Secure and the pages say HSTS; the operators' listener stays apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_serves_https_with_secure_cookies() -> anyhow::Result<()> {
    let hub = TestHub::spawn_configured(|config| {
        config.http_tls = Some(passerelle::config::HttpTlsConfig {
            cert_file: config.tls.cert_file.clone(),
            key_file: config.tls.key_file.clone(),
        });
    })
    .await?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(hub.credentials_dir.join("ca.pem"))?)?;
    let https =
        reqwest::Client::builder().add_root_certificate(ca).redirect(reqwest::redirect::Policy::none()).build()?;
    let port = hub.running.http_addr.port();
    let health = https.get(format!("https://localhost:{port}/healthz")).send().await?;
    assert_eq!((health.status().as_u16(), health.text().await?), (200, "ok".to_owned()));
    let sign_in = https.get(format!("https://localhost:{port}/console/connexion")).send().await?;
    assert_eq!(sign_in.status(), 200);
    assert!(sign_in.headers().get("strict-transport-security").is_some(), "HSTS over HTTPS: {:?}", sign_in.headers());
    let cookie = sign_in.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(cookie.contains("passerelle_console=") && cookie.contains("Secure"), "a Secure session cookie: {cookie}");
    let api = https.get(format!("https://localhost:{port}/api/v1/openapi.json")).send().await?;
    assert_eq!(api.status(), 200);
    // Plain HTTP on the same port gets no page.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|answer| answer.status() != 200), "no plain HTTP on the TLS port");
    // The operators' listener is plain HTTP, apart.
    let ready = reqwest::get(format!("http://{}/readyz", hub.running.ops_addr)).await?;
    assert_eq!(ready.status(), 200);
    hub.running.shutdown().await
}

/// Behind a reverse proxy the hub trusts (`api.trusted_proxies`), each client has its own bucket
/// of anonymous calls, read from `X-Forwarded-For`; from an untrusted peer the header changes
/// nothing (a flooder cannot pose as many clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_are_limited_one_by_one() -> anyhow::Result<()> {
    let hub = TestHub::spawn_configured(|config| {
        config.api.limits.unauthenticated_per_second = 1;
        config.api.limits.unauthenticated_burst = 3;
        config.api.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await?;
    let base = format!("http://{}", hub.running.http_addr);
    let http = reqwest::Client::new();
    let call = async |client: &str| -> anyhow::Result<u16> {
        Ok(http
            .get(format!("{base}/api/v1/dossiers/{}", uuid::Uuid::new_v4()))
            .header("X-Forwarded-For", format!("198.51.100.250, {client}"))
            .header("X-Motif-Acces", "orientation")
            .send()
            .await?
            .status()
            .as_u16())
    };
    let mut first = Vec::new();
    for _ in 0..6 {
        first.push(call("203.0.113.1").await?);
    }
    assert_eq!(first.iter().filter(|s| **s == 429).count(), 3, "one client over its burst: {first:?}");
    assert_eq!(call("203.0.113.2").await?, 401, "another client behind the same proxy has its own bucket");
    hub.running.shutdown().await?;

    // Nothing trusted: the header is the caller's own words, one bucket for the peer.
    let hub = TestHub::spawn_configured(|config| {
        config.api.limits.unauthenticated_per_second = 1;
        config.api.limits.unauthenticated_burst = 3;
    })
    .await?;
    let base = format!("http://{}", hub.running.http_addr);
    let mut statuses = Vec::new();
    for index in 0..6 {
        statuses.push(
            http.get(format!("{base}/api/v1/dossiers/{}", uuid::Uuid::new_v4()))
                .header("X-Forwarded-For", format!("203.0.113.{index}"))
                .send()
                .await?
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "forged addresses share the peer's bucket: {statuses:?}"
    );
    hub.running.shutdown().await
}
