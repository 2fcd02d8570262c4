//! The fault campaign (`infra/fault-campaign.sh` builds and runs it): kills and restarts the
//! hub, projector workers, the broker and PostgreSQL on a random schedule while institutions
//! push and agents read, then checks that every acknowledged event is in the read models
//! exactly once and that no answer was a server error but the documented UNAVAILABLE/503.
//! Exit status 0 when the campaign holds, 1 otherwise.
//!
//! Options: --faults N (100), --persons N (400), --workers N (2), --seed N, --logs DIR.

use std::time::Duration;

use passerelle_e2e::campaign::{Settings, run};

fn main() -> anyhow::Result<()> {
    let mut settings = Settings {
        persons: 400,
        faults: 100,
        gap: (Duration::from_secs(1), Duration::from_secs(6)),
        down: (Duration::from_millis(300), Duration::from_secs(5)),
        rejoin_after: Duration::from_secs(10),
        settle: Duration::from_secs(600),
        ..Settings::short(20_261_203)
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--faults" => settings.faults = value()?.parse()?,
            "--persons" => settings.persons = value()?.parse()?,
            "--workers" => settings.workers = value()?.parse()?,
            "--seed" => settings.seed = value()?.parse()?,
            "--logs" => settings.logs = Some(value()?.into()),
            "-h" | "--help" => {
                println!("fault-campaign [--faults N] [--persons N] [--workers N] [--seed N] [--logs DIR]");
                return Ok(());
            }
            other => anyhow::bail!("unknown option {other:?} (--help lists them)"),
        }
    }
    anyhow::ensure!(settings.workers >= 1 && settings.persons >= 40, "--workers ≥ 1 and --persons ≥ 40");
    passerelle_e2e::campaign::quiet_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = runtime.block_on(run(&settings))?;
    report.print();
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
