//! `passerelle-bench`: generates a synthetic national population, and measures the hub on it,
//! each stage beside the raw cost of the component under it (bench/README.md).

mod ingest;
mod population;
mod profile;
mod stack;
mod stages;

use std::{
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::stages::percentile;

#[derive(Parser)]
#[command(name = "passerelle-bench", about = "Synthetic population and benchmarks of the Passerelle hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a population as the files institutions send today: one CNAF flux per CAF
    /// (`flux-<caf>.xml`) and France Travail's extract (`ft.csv`); prints what it wrote.
    Generate {
        #[arg(long, default_value_t = 10_000)]
        households: u64,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        #[arg(long, default_value = "var/population")]
        out: PathBuf,
    },
    /// Runs the benchmark on a local stack: a fresh database and the broker at --bootstrap
    /// (bench/run.sh starts a fresh one), then prints a table and writes the JSON record.
    Run {
        #[arg(long, default_value_t = 10_000)]
        households: u64,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// The Kafka broker (a fresh one: the run creates its topics).
        #[arg(long)]
        bootstrap: String,
        /// The passerelle binary to measure (build it with --release).
        #[arg(long, default_value = "target/release/passerelle")]
        binary: PathBuf,
        /// The database the run creates (dropped first if it exists).
        #[arg(long, default_value = "passerelle_bench")]
        database: String,
        /// Persons in the database for the API figure (the projected ones, copied in SQL).
        #[arg(long, default_value_t = 1_000_000)]
        api_persons: i64,
        /// Concurrent API clients.
        #[arg(long, default_value_t = 8)]
        api_concurrency: usize,
        /// Seconds of API reads, and of the freshness run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Records per projector transaction (the hub's `projector_max_batch`, and the
        /// apply-only split's batch).
        #[arg(long, default_value_t = 500)]
        projector_batch: usize,
        /// Projector workers in the hub's process (the hub's `projector_workers`), sharing the
        /// topics' partitions.
        #[arg(long, default_value_t = 1)]
        projector_workers: usize,
        /// Where the run's files go (configuration, logs).
        #[arg(long, default_value = "var/bench")]
        workdir: PathBuf,
        /// Where the JSON record of the run is added.
        #[arg(long, default_value = "bench/history")]
        history: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate { households, seed, out } => generate(households, seed, &out),
        Command::Run {
            households,
            seed,
            bootstrap,
            binary,
            database,
            api_persons,
            api_concurrency,
            seconds,
            projector_batch,
            projector_workers,
            workdir,
            history,
        } => {
            let options =
                Options { households, seed, api_persons, api_concurrency, seconds, projector_batch, projector_workers };
            run(&options, &bootstrap, &binary, &database, &workdir, &history).await
        }
    }
}

fn generate(households: u64, seed: u64, out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let population = population::generate(households, seed);
    let mut cafs: Vec<String> = population.households.iter().map(|h| h.place.caf()).collect();
    cafs.sort();
    cafs.dedup();
    for caf in &cafs {
        let path = out.join(format!("flux-{caf}.xml"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        population::write_cnaf_flux(&mut file, &population, caf)?;
        file.flush()?;
    }
    let mut csv = std::io::BufWriter::new(std::fs::File::create(out.join("ft.csv"))?);
    let rows = population::write_ft_csv(&mut csv, &population)?;
    csv.flush()?;
    std::fs::write(out.join("institutions.toml"), population::institutions_toml())?;
    println!(
        "{} households, {} persons, {} events as gRPC pushes; wrote {} CNAF flux files (flux-<caf>.xml), ft.csv ({rows} job seekers) and institutions.toml to {}",
        population.households.len(),
        population.persons(),
        population.pushes.len(),
        cafs.len(),
        out.display()
    );
    Ok(())
}

struct Options {
    households: u64,
    seed: u64,
    api_persons: i64,
    api_concurrency: usize,
    seconds: u64,
    projector_batch: usize,
    projector_workers: usize,
}

fn rate(events: f64, took: Duration) -> f64 {
    events / took.as_secs_f64().max(1e-9)
}

async fn run(
    options: &Options,
    bootstrap: &str,
    binary: &std::path::Path,
    database: &str,
    workdir: &std::path::Path,
    history: &std::path::Path,
) -> anyhow::Result<()> {
    let binary = binary
        .canonicalize()
        .with_context(|| format!("{} not found: cargo build --release --bin passerelle", binary.display()))?;
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    let dir = workdir.join(started_at.format("%Y%m%dT%H%M%SZ").to_string());
    eprintln!("passerelle-bench: run directory {}", dir.display());

    eprintln!("[1/7] population: {} households, seed {}", options.households, options.seed);
    let population = population::generate(options.households, options.seed);
    let events = population.pushes.len() as u64;
    let persons = population.persons();
    eprintln!("  {persons} persons, {events} events ({:.1} per person)", events as f64 / persons as f64);

    let stack =
        stack::Stack::prepare(&dir, &binary, bootstrap, database, options.projector_batch, options.projector_workers)
            .await?;

    eprintln!(
        "[2/7] ingest: gRPC PublishBatch ({} events per call, {} calls in flight)",
        ingest::BATCH,
        ingest::IN_FLIGHT
    );
    let owner = stack.owner_pool().await?;
    let hub = stack.start(&["serve", "ingest"], "ingest.log").await?;
    let ingest_profile = profile::Profile::start(&owner).await?;
    let cpu_before = stack::Cpu::read(Some(hub.pid()));
    let (counts, ingest_took) = ingest::through_grpc(&stack, &population.pushes).await?;
    let ingest_statements = ingest_profile.finish(&owner, "ingest", 10).await?;
    let ingest_cpu = stack::Cpu::read(Some(hub.pid())).since(&cpu_before);
    hub.stop()?;
    eprintln!("  CPU seconds during the run: {ingest_cpu}");
    let ingest_rate = rate(counts.accepted as f64, ingest_took);
    eprintln!(
        "  {} accepted, {} refused in {:.1} s: {ingest_rate:.0} events/s",
        counts.accepted,
        counts.refused,
        ingest_took.as_secs_f64()
    );
    eprintln!("[3/7] ingest baseline: the same records produced straight to the broker");
    let baseline = ingest::baseline(&stack, &population.pushes).await?;
    eprintln!("  CPU seconds during the production: {}", baseline.cpu);
    let baseline_rate = rate(baseline.records as f64, baseline.took);
    eprintln!("  {} records in {:.1} s: {baseline_rate:.0} records/s", baseline.records, baseline.took.as_secs_f64());

    eprintln!("[4/7] projection: passerelle up on the log of {} events", counts.accepted);
    let catch_up_profile = profile::Profile::start(&owner).await?;
    let cpu_before = stack::Cpu::read(None);
    let (hub, projected) = stages::projection(&stack, counts.accepted).await?;
    let mut projection_cpu = stack::Cpu::read(Some(hub.pid())).since(&cpu_before);
    // The hub process started after the first reading: all its CPU is this stage's.
    projection_cpu["hub_s"] = json!(stack::Cpu::read(Some(hub.pid())).hub);
    eprintln!("  CPU seconds during the catch-up: {projection_cpu}");
    let projection_rate = rate(projected.applied as f64, projected.total);
    let projection_steady = rate(projected.steady_events as f64, projected.steady);
    eprintln!(
        "  {} applied, {} dead letters, {} dossiers in {:.1} s: {projection_rate:.0} events/s ({projection_steady:.0} steady)",
        projected.applied,
        projected.dead_letters,
        projected.dossiers,
        projected.total.as_secs_f64()
    );
    let live_folds = stages::live_folds(&stack).await?;
    let fallback = |on: f64, full: f64| if on + full > 0.0 { full / (on + full) } else { 0.0 };
    let fold = |key: &str| live_folds.get(key).copied().unwrap_or_default();
    eprintln!(
        "  folds: dossiers {:.0} incremental, {:.0} full; households {:.0} incremental, {:.0} full",
        fold("dossier_incremental"),
        fold("dossier_full"),
        fold("household_incremental"),
        fold("household_full")
    );
    let catch_up_statements = catch_up_profile.finish(&owner, "catch-up", 15).await?;
    eprintln!("  baseline: the same rows COPY'd into empty twins of the tables");
    let pg = stages::pg_baseline(&stack).await?;
    let pg_rate = rate(projected.applied as f64, pg.took);
    eprintln!("  {:?} in {:.2} s: {pg_rate:.0} events/s", pg.rows, pg.took.as_secs_f64());

    eprintln!("  split: the records fetched into memory by a plain consumer, then applied without the broker");
    let split_profile = profile::Profile::start(&owner).await?;
    let split = stages::apply_only(&stack, options.projector_batch).await?;
    let split_statements = split_profile.finish(&owner, "apply only", 15).await?;
    let fetch_rate = rate(split.records as f64, split.fetch);
    let apply_rate = rate(split.records as f64, split.apply);
    eprintln!(
        "  {} records: fetch {:.1} s ({fetch_rate:.0}/s), apply {:.1} s ({apply_rate:.0}/s)",
        split.records,
        split.fetch.as_secs_f64(),
        split.apply.as_secs_f64()
    );

    let fresh_rate = (0.5 * ingest_rate.min(projection_steady)).max(1.0);
    eprintln!(
        "[5/7] freshness: {fresh_rate:.0} pushes/s (half the smaller capacity) for {} s, about 4 a second followed (their dossier rows read in SQL)",
        options.seconds
    );
    let report = |fresh: &stages::Freshness| {
        eprintln!(
            "  {} pushed ({:.0}/s achieved), {} followed: p50 {:.3} s, p99 {:.3} s (calls p50 {:.3} s), {} lost, {} refused",
            fresh.pushed,
            fresh.achieved_rate,
            fresh.visible.len(),
            percentile(&fresh.visible, 50.0),
            percentile(&fresh.visible, 99.0),
            percentile(&fresh.calls, 50.0),
            fresh.lost,
            fresh.refused
        );
    };
    // About four followed pushes a second, whatever the rate.
    let probe_every = ((fresh_rate / 4.0) as usize).max(1);
    let fresh = stages::freshness(&stack, &population, fresh_rate, options.seconds, probe_every).await?;
    report(&fresh);
    eprintln!("  and at a quarter of it ({:.0} pushes/s), to show where the knee is", fresh_rate / 2.0);
    // The live projection digests the first run's backlog before the second starts.
    settle(&stack).await?;
    let quarter =
        stages::freshness(&stack, &population, fresh_rate / 2.0, options.seconds, (probe_every / 2).max(1)).await?;
    report(&quarter);

    eprintln!("[6/7] rebuild: passerelle projections rebuild dossier, under the running hub");
    // The live projection first digests what the freshness runs pushed (an operator rebuilds a
    // hub that keeps up); a rebuild that fails is recorded, not fatal to the run.
    settle(&stack).await?;
    let pool = stack.owner_pool().await?;
    let rebuild_result = stages::rebuild(&stack).await;
    if let Err(error) = &rebuild_result {
        eprintln!("  rebuild failed: {error}");
    }
    let rebuild_took = rebuild_result.as_ref().copied().unwrap_or_default();
    let (log_events,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM readmodel.applied_events").fetch_one(&pool).await?;
    eprintln!("  {log_events} events in {:.1} s", rebuild_took.as_secs_f64());

    eprintln!("[7/7] API: dossier reads at {} persons, journal on", options.api_persons);
    let seeded = stages::seed(&stack, options.api_persons).await?;
    // Latency depends on the load offered: clients reading back to back, 1, then 4, then the
    // configured number (8: the machine saturated).
    let mut levels = Vec::new();
    for concurrency in [1, 4, options.api_concurrency] {
        let reads = stages::reads(&stack, concurrency, options.seconds).await?;
        let reads_rate = rate(reads.latencies_ms.len() as f64, reads.took);
        eprintln!(
            "  {concurrency} client(s): {} reads, {reads_rate:.0}/s, p50 {:.1} ms, p99 {:.1} ms, statuses {:?}, {} journal rows",
            reads.latencies_ms.len(),
            percentile(&reads.latencies_ms, 50.0),
            percentile(&reads.latencies_ms, 99.0),
            reads.statuses,
            reads.journal_rows
        );
        levels.push(reads);
    }
    let console = stages::console_reads(&stack, options.seconds).await?;
    eprintln!(
        "  console dossier page, 1 client: {} pages, p50 {:.1} ms, p99 {:.1} ms, statuses {:?}, {} journal rows",
        console.latencies_ms.len(),
        percentile(&console.latencies_ms, 50.0),
        percentile(&console.latencies_ms, 99.0),
        console.statuses,
        console.journal_rows
    );
    hub.stop()?;
    let reads = levels.pop().ok_or_else(|| anyhow::anyhow!("no API figure"))?;
    let reads_rate = rate(reads.latencies_ms.len() as f64, reads.took);
    let p50 = percentile(&reads.latencies_ms, 50.0);
    let p99 = percentile(&reads.latencies_ms, 99.0);
    let lighter: Vec<Value> = levels
        .iter()
        .map(|level| {
            json!({
                "concurrency": level.concurrency, "reads": level.latencies_ms.len(),
                "reads_per_s": rate(level.latencies_ms.len() as f64, level.took),
                "p50_ms": percentile(&level.latencies_ms, 50.0), "p99_ms": percentile(&level.latencies_ms, 99.0),
                "journal_rows": level.journal_rows
            })
        })
        .collect();

    let database_settings = profile::settings(&owner).await?;
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let record = json!({
        "started_at": started_at.to_rfc3339(),
        "commit": git,
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "broker": "tansu 0.6 (sqlite file storage)", "database": "PostgreSQL on 127.0.0.1", "database_settings": database_settings},
        "population": {"households": options.households, "seed": options.seed, "persons": persons, "events": events},
        "ingest": {
            "events": counts.accepted, "refused": counts.refused, "seconds": ingest_took.as_secs_f64(), "events_per_s": ingest_rate,
            "batch": ingest::BATCH, "calls_in_flight": ingest::IN_FLIGHT,
            "baseline": {"what": "the hub's own prepared records (same keys, values, producer settings, 6 partitions) produced straight to the broker", "records": baseline.records, "seconds": baseline.took.as_secs_f64(), "records_per_s": baseline_rate, "mean_record_bytes": baseline.mean_bytes},
            "ratio": ingest_rate / baseline_rate, "target_ratio": 0.8,
            "cpu_seconds": ingest_cpu, "baseline_cpu_seconds": baseline.cpu, "statements": ingest_statements
        },
        "projection": {
            "events": projected.applied, "dead_letters": projected.dead_letters, "dossiers": projected.dossiers,
            "max_batch": options.projector_batch, "workers": options.projector_workers, "cpu_seconds": projection_cpu,
            "seconds_from_start": projected.total.as_secs_f64(), "events_per_s": projection_rate,
            "steady_events_per_s": projection_steady,
            "baseline": {"what": "COPY (binary) of the rows the projection wrote into empty twins of its tables, one transaction", "rows": pg.rows, "seconds": pg.took.as_secs_f64(), "events_per_s": pg_rate},
            "ratio": projection_rate / pg_rate, "target_events_per_s": 10_000,
            "statements": catch_up_statements,
            "folds": {
                "what": "passerelle_projector_folds_total at the end of the catch-up: dossiers and households folded on from their stored state (incremental) or over their whole history (full)",
                "counts": live_folds,
                "dossier_fallback_rate": fallback(fold("dossier_incremental"), fold("dossier_full")),
                "household_fallback_rate": fallback(fold("household_incremental"), fold("household_full"))
            },
            "split": {
                "what": "the same records fetched into memory by a plain librdkafka consumer (the broker's cost), then applied by the projection's code into empty tables (projector + PostgreSQL, no broker)",
                "records": split.records, "fetch_seconds": split.fetch.as_secs_f64(), "fetch_records_per_s": fetch_rate,
                "apply_seconds": split.apply.as_secs_f64(), "apply_events_per_s": apply_rate, "batch": split.batch,
                "apply_ratio_to_copy": apply_rate / pg_rate,
                "statements": split_statements,
                "folds": {
                    "dossiers_incremental": split.folds.dossiers_on, "dossiers_full": split.folds.dossiers_full,
                    "households_incremental": split.folds.households_on, "households_full": split.folds.households_full,
                    "dossier_fallback_rate": fallback(split.folds.dossiers_on as f64, split.folds.dossiers_full as f64)
                }
            }
        },
        "freshness": {
            "rate_per_s": fresh.rate, "achieved_rate_per_s": fresh.achieved_rate, "pushed": fresh.pushed,
            "followed": fresh.visible.len(), "lost": fresh.lost, "refused": fresh.refused,
            "visible_p50_s": percentile(&fresh.visible, 50.0), "visible_p99_s": percentile(&fresh.visible, 99.0),
            "call_p50_s": percentile(&fresh.calls, 50.0), "call_p99_s": percentile(&fresh.calls, 99.0),
            "poll_interval_ms": 50, "followed_per_s": 4, "target_p99_s": 2.0,
            "pushes": "référent assignments through one open PublishBatch stream per authority, each sent as it happens",
            "probe": "the followed persons' dossier rows read in SQL, all in one query every 50 ms (not through the API)",
            "at_quarter": {
                "rate_per_s": quarter.rate, "achieved_rate_per_s": quarter.achieved_rate, "followed": quarter.visible.len(),
                "lost": quarter.lost, "visible_p50_s": percentile(&quarter.visible, 50.0),
                "visible_p99_s": percentile(&quarter.visible, 99.0), "call_p50_s": percentile(&quarter.calls, 50.0),
                "call_p99_s": percentile(&quarter.calls, 99.0)
            }
        },
        "rebuild": {"events": log_events, "seconds": rebuild_took.as_secs_f64(), "events_per_s": rate(log_events as f64, rebuild_took),
                    "error": rebuild_result.as_ref().err().map(|e| e.to_string())},
        "api": {
            "persons": seeded.persons, "events": seeded.events,
            "seeding": "the projected persons copied under new ids in SQL (INSERT … SELECT), sealed data included",
            "seed_seconds": seeded.took.as_secs_f64(),
            "concurrency": reads.concurrency, "seconds": reads.took.as_secs_f64(), "reads": reads.latencies_ms.len(),
            "reads_per_s": reads_rate, "p50_ms": p50, "p99_ms": p99,
            "statuses": reads.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<String, Value>>(),
            "journal_rows": reads.journal_rows, "target_p99_ms": 20,
            "lighter_loads": lighter
        },
        "console": {
            "page": "/console/dossiers/{id}?motif=orientation, signed in as the territory's orientation agent through the development identity provider",
            "clients": 1, "pages": console.latencies_ms.len(), "seconds": console.took.as_secs_f64(),
            "p50_ms": percentile(&console.latencies_ms, 50.0), "p99_ms": percentile(&console.latencies_ms, 99.0),
            "statuses": console.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<String, Value>>(),
            "journal_rows": console.journal_rows, "target_p99_ms": 50
        },
        "wall_seconds": clock.elapsed().as_secs_f64(),
    });
    print_table(&record);
    std::fs::create_dir_all(history)?;
    let file = history.join(format!("{}.json", started_at.format("%Y%m%dT%H%M%SZ")));
    std::fs::write(&file, serde_json::to_string_pretty(&record)? + "\n")?;
    println!("\n{}", serde_json::to_string(&record)?);
    eprintln!("record written to {}", file.display());
    Ok(())
}

/// Waits until the live projection has applied everything pushed (no progress for 3 s).
async fn settle(stack: &stack::Stack) -> anyhow::Result<()> {
    let pool = stack.owner_pool().await?;
    let mut last = -1i64;
    loop {
        let (applied,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM readmodel.applied_events").fetch_one(&pool).await?;
        if applied == last {
            return Ok(());
        }
        last = applied;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

fn print_table(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!();
    println!("{:<12} {:>16} {:>18} {:>8} {:>12}  parameters", "stage", "hub", "baseline", "ratio", "target");
    println!(
        "{:<12} {:>12.0} ev/s {:>14.0} rec/s {:>7.0}% {:>12}  {} events, batch {}, {} calls in flight, {:.0} B/record",
        "ingest",
        f(&r["ingest"]["events_per_s"]),
        f(&r["ingest"]["baseline"]["records_per_s"]),
        100.0 * f(&r["ingest"]["ratio"]),
        ">= 80%",
        r["ingest"]["events"],
        r["ingest"]["batch"],
        r["ingest"]["calls_in_flight"],
        f(&r["ingest"]["baseline"]["mean_record_bytes"]),
    );
    println!(
        "{:<12} {:>12.0} ev/s {:>15.0} ev/s {:>7.1}% {:>12}  {} events, {} dossiers, {} worker(s), steady {:.0} ev/s; baseline: COPY of the same rows",
        "projection",
        f(&r["projection"]["events_per_s"]),
        f(&r["projection"]["baseline"]["events_per_s"]),
        100.0 * f(&r["projection"]["ratio"]),
        ">= 10000/s",
        r["projection"]["events"],
        r["projection"]["dossiers"],
        r["projection"]["workers"],
        f(&r["projection"]["steady_events_per_s"]),
    );
    println!(
        "{:<12} dossiers {:.1}% full, households {:.1}% full (the incremental fold's fallback rate during the catch-up)",
        "  folds",
        100.0 * f(&r["projection"]["folds"]["dossier_fallback_rate"]),
        100.0 * f(&r["projection"]["folds"]["household_fallback_rate"]),
    );
    println!(
        "{:<12} {:>12.0} ev/s {:>15.0} ev/s {:>7.1}% {:>12}  projection code on records in memory (batch {}); broker fetch alone {:.0} rec/s",
        "  apply only",
        f(&r["projection"]["split"]["apply_events_per_s"]),
        f(&r["projection"]["baseline"]["events_per_s"]),
        100.0 * f(&r["projection"]["split"]["apply_ratio_to_copy"]),
        "",
        r["projection"]["split"]["batch"],
        f(&r["projection"]["split"]["fetch_records_per_s"]),
    );
    println!(
        "{:<12} p50 {:>7.3} s {:>18} {:>8} {:>12}  p99 {:.3} s at {:.0} pushes/s, {} followed, {} lost; at {:.0}/s: p50 {:.3} s, p99 {:.3} s",
        "freshness",
        f(&r["freshness"]["visible_p50_s"]),
        "",
        "",
        "p99 <= 2 s",
        f(&r["freshness"]["visible_p99_s"]),
        f(&r["freshness"]["rate_per_s"]),
        r["freshness"]["followed"],
        r["freshness"]["lost"],
        f(&r["freshness"]["at_quarter"]["rate_per_s"]),
        f(&r["freshness"]["at_quarter"]["visible_p50_s"]),
        f(&r["freshness"]["at_quarter"]["visible_p99_s"]),
    );
    println!(
        "{:<12} {:>10.1} s {:>18} {:>8} {:>12}  {} events ({:.0} ev/s)",
        "rebuild",
        f(&r["rebuild"]["seconds"]),
        "",
        "",
        "",
        r["rebuild"]["events"],
        f(&r["rebuild"]["events_per_s"]),
    );
    println!(
        "{:<12} p50 {:>6.1} ms {:>18} {:>8} {:>12}  p99 {:.1} ms, {:.0} reads/s, {} persons (seeded in SQL), {} clients, {} journal rows",
        "api read",
        f(&r["api"]["p50_ms"]),
        "",
        "",
        "p99 <= 20 ms",
        f(&r["api"]["p99_ms"]),
        f(&r["api"]["reads_per_s"]),
        r["api"]["persons"],
        r["api"]["concurrency"],
        r["api"]["journal_rows"],
    );
    println!(
        "{:<12} p50 {:>6.1} ms {:>18} {:>8} {:>12}  p99 {:.1} ms, {} pages, 1 client, {} journal rows",
        "console page",
        f(&r["console"]["p50_ms"]),
        "",
        "",
        "p99 <= 50 ms",
        f(&r["console"]["p99_ms"]),
        r["console"]["pages"],
        r["console"]["journal_rows"],
    );
    for level in r["api"]["lighter_loads"].as_array().into_iter().flatten() {
        println!(
            "{:<12} p50 {:>6.1} ms {:>18} {:>8} {:>12}  p99 {:.1} ms, {:.0} reads/s, {} client(s)",
            "",
            f(&level["p50_ms"]),
            "",
            "",
            "",
            f(&level["p99_ms"]),
            f(&level["reads_per_s"]),
            level["concurrency"],
        );
    }
}
