//! The fault campaign's short version (the full one: `infra/fault-campaign.sh`, at least 100
//! faults): every kind of fault twice (hub, projector worker, broker SIGKILLed; PostgreSQL
//! restarted and crashed) while institutions push and agents read; every acknowledged event
//! ends in the read models exactly once, equal to the oracle, and no answer was a server error
//! other than UNAVAILABLE/503.

use passerelle_e2e::campaign::{Settings, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_faults_of_every_kind_lose_nothing_and_answer_only_unavailable() -> anyhow::Result<()> {
    let seed = std::env::var("PASSERELLE_PROPERTY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_203);
    passerelle_e2e::campaign::quiet_logs();
    let report = run(&Settings::short(seed)).await?;
    report.print();
    assert_eq!(report.faults.values().sum::<usize>(), 10);
    assert_eq!(report.faults.len(), 5, "every kind of fault: {:?}", report.faults);
    assert!(report.violations.is_empty(), "the campaign broke its promise: {:#?}", report.violations);
    assert!(report.sends > report.requests, "the faults made institutions retry");
    Ok(())
}
