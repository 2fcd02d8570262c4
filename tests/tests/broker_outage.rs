//! With the broker down, callers get UNAVAILABLE within 5 seconds, never a false OK; once it is
//! back, calls succeed again within 30 seconds without restarting the hub, and every event that
//! was acknowledged is on the topic.

mod fixtures;

use std::time::{Duration, Instant};

use fixtures::*;
use passerelle_domain::event::Family;
use passerelle_e2e::{TestHub, broker::PrivateBroker, topics};
use passerelle_ingest::proto::allocataire_ingest_client::AllocataireIngestClient;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_yields_unavailable_within_5s_then_recovery_within_30s_with_nothing_acknowledged_lost()
-> anyhow::Result<()> {
    let mut broker = PrivateBroker::start()?;
    let hub = TestHub::spawn_on(&broker.bootstrap()).await?;
    let mut client = AllocataireIngestClient::new(hub.channel_as("caf-521").await?);
    let mut acknowledged = Vec::new();
    let mut next = 0;
    let event = |n: &mut i32| {
        *n += 1;
        caf(&format!("outage-{n}"), "2026-09-20T09:00:00+02:00", legrand(), "DEM", sdd(*n % 2 == 0))
    };

    for _ in 0..5 {
        let e = event(&mut next);
        let id = e.event_id.clone();
        client.publish(e).await?;
        acknowledged.push(id);
    }

    broker.kill();
    let mut unavailable_after = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let outcome = client.publish(event(&mut next)).await;
        let elapsed = started.elapsed();
        let status = outcome.expect_err("no OK while the broker is down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("retry with the same event_id"), "{}", status.message());
        assert!(elapsed <= Duration::from_secs(5), "UNAVAILABLE after {elapsed:?}");
        unavailable_after.push(elapsed);
    }
    eprintln!("UNAVAILABLE after {unavailable_after:?}");

    broker.resume()?;
    let back = Instant::now();
    let recovered = loop {
        let e = event(&mut next);
        let id = e.event_id.clone();
        match client.publish(e).await {
            Ok(_) => {
                acknowledged.push(id);
                break back.elapsed();
            }
            Err(status) => {
                eprintln!("while recovering: {}", status.message());
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(back.elapsed() < Duration::from_secs(30), "no recovery within 30 s of the broker's return");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    eprintln!("recovered {recovered:?} after the broker's return");
    for _ in 0..5 {
        let e = event(&mut next);
        let id = e.event_id.clone();
        client.publish(e).await?;
        acknowledged.push(id);
    }

    let records =
        tokio::task::block_in_place(|| topics::read_all(&broker.bootstrap(), &hub.topic(Family::Allocataire)))?;
    let mut on_topic: Vec<String> = Vec::new();
    for record in &records {
        on_topic.extend(hub.event_id_of(Family::Allocataire, &record.value).await);
    }
    assert_eq!(on_topic.len(), records.len(), "every record carries an event id");
    for id in &acknowledged {
        assert!(on_topic.contains(id), "acknowledged {id} missing from the topic");
    }
    hub.running.shutdown().await
}
