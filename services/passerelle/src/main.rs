//! `passerelle`: runs the hub's services. Thin on purpose: everything lives in the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use passerelle::config::Config;
use passerelle_telemetry::LogFormat;

#[derive(Parser)]
#[command(
    name = "passerelle",
    version,
    about = "Passerelle: the RSA data-sharing hub between CAF/MSA, France Travail and the départements"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables PASSERELLE__… override it.
    #[arg(long, global = true, env = "PASSERELLE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole hub in one process (single-machine deployment, demo).
    Up {
        /// Pushes the demo households through the gRPC API once the hub is up.
        #[arg(long)]
        demo: bool,
        /// Credentials of the demo institutions (written by `passerelle dev pki`).
        #[arg(long, default_value = "var/pki")]
        credentials: PathBuf,
    },
    /// Runs one service.
    Serve {
        #[command(subcommand)]
        service: Service,
    },
    /// Imports the files institutions send today, through the gRPC API with the credentials
    /// given. Exit status: 0 all accepted, 3 some facts refused (listed), 1 the file is not
    /// valid or the hub did not answer.
    Import {
        #[command(subcommand)]
        file: ImportFile,
    },
    /// Erases one person on a lawful request: their data keys are destroyed (their events stay
    /// on the log, unreadable) and they leave every read model; a rebuild does not bring them back.
    Erase {
        /// The person's id in the hub.
        #[arg(long, conflicts_with = "nir")]
        person_id: Option<uuid::Uuid>,
        /// Or their NIR (read from the PASSERELLE_ERASE_NIR environment variable if "-", so it
        /// does not stay in the shell history).
        #[arg(long)]
        nir: Option<String>,
    },
    /// Dead letters of the projections: list them (without personal data) or replay one.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Projections (read models) maintenance.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Identity conflicts (one key claimed for two persons) and the decisions on them.
    Identite {
        #[command(subcommand)]
        command: IdentiteCommand,
    },
    /// Territories: the CAF/MSA facts waiting for their RSA authority.
    Territoires {
        #[command(subcommand)]
        command: TerritoiresCommand,
    },
    /// Runs the retention job now: erases persons without contact for `retention_days`.
    Retention,
    /// Development helpers.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Subcommand)]
enum Service {
    /// The gRPC ingestion services, with the schema registry and HTTP endpoints, without the
    /// projector (run projectors as separate workers with `up` on other machines).
    Ingest,
}

#[derive(clap::Args)]
struct Connection {
    /// The hub's gRPC ingestion API.
    #[arg(long, default_value = "https://localhost:50051")]
    hub: String,
    /// Directory of credentials: ca.pem, <institution>.pem, <institution>.key.
    #[arg(long, default_value = "var/pki")]
    credentials: PathBuf,
    /// The institution to act as (its certificate's name).
    #[arg(long = "as")]
    institution: String,
    /// The key of the fact ids (64 hex characters): the source's, so that a re-import gives the
    /// same ids. Defaults to <credentials>/<institution>.idkey; a relaying département gives the
    /// caisse's.
    #[arg(long)]
    id_key: Option<PathBuf>,
    /// No progress lines, only the summary.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum ImportFile {
    /// A CNAF RSA flux (XML, windows-1252): "bénéficiaires" monthly or "instruction" daily.
    CnafFlux {
        file: PathBuf,
        #[command(flatten)]
        connection: Connection,
        /// The caller relays the flux it received for its territory (a département).
        #[arg(long)]
        relay: bool,
    },
    /// A France Travail extract (CSV separated by ";").
    FtCsv {
        file: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
    /// A structure's parcours export (CSV separated by ";", one row per situation, objective
    /// or action, a person's rows together; columns in
    /// services/importers/src/structure_csv.rs), imported as the structure (--as).
    StructureCsv {
        file: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Replays the topics from the beginning into fresh tables and swaps them in atomically;
    /// the current tables keep serving meanwhile. Projections: dossier.
    Rebuild { name: String },
}

#[derive(Subcommand)]
enum IdentiteCommand {
    /// Lists the conflicts awaiting a decision (all of them with --all). Nothing personal is
    /// shown: pseudonymous subject keys and person ids.
    Conflicts {
        #[arg(long)]
        all: bool,
    },
    /// Publishes a decision on a conflict: `confirm` (the claim is right, the key moves to the
    /// claimant), `reject` (the key stays with its holder) or `merge` (one person).
    Resolve {
        /// The conflict's number, as `identite conflicts` shows it.
        #[arg(long)]
        conflict: i64,
        #[arg(long, value_parser = ["confirm", "reject", "merge"])]
        decision: String,
        /// Who decides (uid), kept with the decision.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
enum TerritoiresCommand {
    /// Lists the facts "à affecter": received by département 69 (IDEPARTE 069) with a commune
    /// that does not say whether they are the Métropole de Lyon's or the Rhône's. Nothing
    /// personal is shown.
    #[command(name = "a-affecter")]
    AAffecter {
        /// Only this caisse's facts (its organisme number, NUMORG).
        #[arg(long)]
        caisse: Option<String>,
    },
    /// Publishes ops' decision on a foyer's authority, for a caisse that does not correct its
    /// facts: the foyer's waiting facts, and those that arrive waiting later, are the
    /// authority's (the latest decision holds). The projection applies it, as every rebuild.
    Affecter {
        /// The foyer, as `territoires a-affecter` shows it (foyer:…).
        #[arg(long)]
        foyer: String,
        #[arg(long, value_parser = ["69M", "69D"])]
        autorite: String,
        /// Who decides (uid), kept with the decision.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Lists the dead letters not replayed yet (all of them with --all).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Reads the record back from its topic and applies it again.
    Replay { id: i64 },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Pushes the demo households to a running hub.
    Demo {
        #[arg(long, default_value = "https://127.0.0.1:50051")]
        grpc: String,
        #[arg(long, default_value = "var/pki")]
        credentials: PathBuf,
    },
    /// Writes a synthetic CNAF flux (deterministic from the seed), to measure the importer.
    GenFlux {
        #[arg(long)]
        foyers: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Issues development credentials: a CA, the hub's server certificate, and one client
    /// certificate per institution of the institutions file; and the development token issuer.
    Pki {
        #[arg(long, default_value = "var/pki")]
        out: PathBuf,
    },
    /// Mints an access token for an agent of the habilitations file, signed with the development
    /// key: only a hub whose api.jwks_file is the development key set accepts it.
    Token {
        /// The agent's uid (infra/dev/habilitations.toml lists them).
        #[arg(long)]
        agent: String,
        /// The development signing key (written by `passerelle dev pki`).
        #[arg(long, default_value = "var/pki/oidc-dev-key.der")]
        key: PathBuf,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Import { file } = cli.command {
        let code = import(file).await?;
        std::process::exit(code);
    }
    let config = Config::load(cli.config.as_deref()).context("reading the configuration")?;
    let format = if config.log_format == "json" { LogFormat::Json } else { LogFormat::Pretty };
    let tracer = match &config.otlp_endpoint {
        Some(endpoint) => Some(passerelle_telemetry::otlp_provider(endpoint).map_err(anyhow::Error::msg)?),
        None => None,
    };
    passerelle_telemetry::init(format, tracer);
    let outcome = dispatch(cli.command, config).await;
    passerelle_telemetry::shutdown();
    outcome
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Up { demo, credentials } => run(&config, demo.then_some(credentials)).await,
        Command::Serve { service: Service::Ingest } => {
            run_services(&config, None, passerelle::Services { projector: false }).await
        }
        Command::Dev { command: DevCommand::Demo { grpc, credentials } } => {
            let accepted = passerelle::demo::push(&grpc, &credentials).await?;
            println!("demo: {accepted} events accepted");
            Ok(())
        }
        Command::Dev { command: DevCommand::GenFlux { foyers, seed, out } } => {
            let file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            passerelle_importers::generate::write_flux(&mut writer, foyers, seed)?;
            std::io::Write::flush(&mut writer)?;
            println!("{} foyers written to {}", foyers, out.display());
            Ok(())
        }
        Command::Erase { person_id, nir } => {
            let pool = passerelle::connect(&config).await?;
            let person = match (person_id, nir) {
                (Some(person_id), _) => Some(person_id),
                (None, Some(nir)) => {
                    let nir = if nir == "-" {
                        std::env::var("PASSERELLE_ERASE_NIR").context("PASSERELLE_ERASE_NIR is not set")?
                    } else {
                        nir
                    };
                    let nir = passerelle_domain::Nir::parse(&nir).map_err(|e| anyhow::anyhow!("--nir: {e}"))?;
                    let keys = passerelle_eventlog::subject::SubjectKeys::new(config.secrets.pepper()?);
                    passerelle_readmodel::person_of_subject(&pool, keys.nir(&nir).as_str()).await?
                }
                (None, None) => anyhow::bail!("say who to erase: --person-id or --nir"),
            };
            let Some(person) = person else {
                println!("no such person in the hub: nothing erased");
                return Ok(());
            };
            let keys = passerelle::key_store(&config, &pool).await?;
            let erased = passerelle_projector::erase::erase_person(
                &pool,
                &keys,
                person,
                passerelle_projector::erase::Reason::Request,
            )
            .await?;
            println!(
                "person {person} erased: {} subject keys, {} data keys destroyed, {} events removed from the read models, {} journal rows moved to a new random id; {} bucket keys replaced ({} live keys wrapped again), root keys now at generation {}",
                erased.subject_keys,
                erased.data_keys_destroyed,
                erased.events_removed,
                erased.journal_rows,
                erased.buckets_rotated,
                erased.keys_rewrapped,
                erased.root_generation
            );
            Ok(())
        }
        Command::Dlq { command: DlqCommand::List { all } } => {
            let pool = passerelle::connect(&config).await?;
            let letters = passerelle_projector::dlq::list(&pool, all).await?;
            if letters.is_empty() {
                println!("no dead letters");
            }
            for letter in letters {
                println!(
                    "#{:<6} {}/{}@{}  {}  {}{}",
                    letter.dead_letter_id,
                    letter.topic,
                    letter.partition,
                    letter.offset,
                    letter.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                    letter.reason,
                    if letter.replayed_at.is_some() { "  (replayed)" } else { "" }
                );
            }
            Ok(())
        }
        Command::Projections { command: ProjectionsCommand::Rebuild { name } } => {
            let started = std::time::Instant::now();
            let mut last = std::time::Instant::now();
            let rebuilt = passerelle::rebuild_projection(&config, &name, |progress| {
                if last.elapsed() >= std::time::Duration::from_secs(2) {
                    last = std::time::Instant::now();
                    eprintln!("rebuild {name}: {} of about {} records replayed", progress.records, progress.total);
                }
            })
            .await?;
            println!(
                "projection {name} rebuilt and swapped in: {} records replayed ({} applied, {} dead letters), {} dossiers, in {:.1} s",
                rebuilt.records,
                rebuilt.applied,
                rebuilt.dead_letters,
                rebuilt.persons,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Territoires { command: TerritoiresCommand::AAffecter { caisse } } => {
            let caisse = caisse
                .map(|code| passerelle_domain::Organisme::parse(&code).map_err(|e| anyhow::anyhow!("--caisse: {e}")))
                .transpose()?;
            let pool = passerelle::connect(&config).await?;
            let waiting =
                passerelle_readmodel::territory::to_assign(&pool, caisse.as_ref().map(|c| c.as_str())).await?;
            if waiting.is_empty() {
                println!("no fact waiting for its authority");
                return Ok(());
            }
            for fact in &waiting {
                let commune = fact.commune.as_deref().map_or_else(
                    || "no commune".to_owned(),
                    |code| match passerelle_domain::territory::communes::entry(code) {
                        Some(entry) => format!("commune {code} {}", entry.name()),
                        None => format!("commune {code}"),
                    },
                );
                println!(
                    "{}  {}/{}  {}  caisse {}  {}  {} person(s)  {}",
                    fact.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                    fact.source,
                    fact.event_id,
                    fact.event_type,
                    fact.organisme.as_deref().unwrap_or("?"),
                    commune,
                    fact.persons,
                    fact.household_key.as_deref().unwrap_or("no foyer")
                );
            }
            println!(
                "{} fact(s) waiting. The caisse settles each by pushing its correction (corrects_event_id = the event id \
                 above) with receiving_authority 69M (Métropole de Lyon) or 69D (Rhône); a flux the Métropole or the \
                 Rhône relays is placed in the relaying authority; or ops decide for the foyer: \
                 passerelle territoires affecter --foyer <foyer:…> --autorite 69M|69D --by <uid>.",
                waiting.len()
            );
            Ok(())
        }
        Command::Territoires { command: TerritoiresCommand::Affecter { foyer, autorite, by } } => {
            let by = passerelle_domain::AgentUid::parse(&by).map_err(|e| anyhow::anyhow!("--by: {e}"))?;
            let pool = passerelle::connect(&config).await?;
            let waits = passerelle_readmodel::territory::waits(&pool, &foyer).await?;
            let placed = passerelle_readmodel::territory::assignment_of(&pool, &foyer).await?;
            if !waits && placed.is_none() {
                anyhow::bail!(
                    "--foyer: no fact of {foyer:?} waits for its authority, and ops never placed it \
                     (`passerelle territoires a-affecter` lists the foyers waiting)"
                );
            }
            let decision = passerelle_eventlog::affectation::TerritoryAssignment {
                decision_id: uuid::Uuid::now_v7(),
                decided_at: chrono::Utc::now(),
                decided_by: by.as_str().to_owned(),
                household_key: foyer.clone(),
                authority: autorite.clone(),
            };
            passerelle::publish_territory_assignment(&config, &decision).await?;
            println!(
                "decision {} published: foyer {foyer} is {autorite}'s{}; the projection applies it",
                decision.decision_id,
                placed.map(|before| format!(" (was {before}'s)")).unwrap_or_default()
            );
            Ok(())
        }
        Command::Identite { command: IdentiteCommand::Conflicts { all } } => {
            let pool = passerelle::connect(&config).await?;
            let conflicts = passerelle_projector::identite::list(&pool, all).await?;
            if conflicts.is_empty() {
                println!("no identity conflicts{}", if all { "" } else { " awaiting a decision" });
            }
            for conflict in conflicts {
                println!(
                    "#{:<5} {}  key {}  linked to {}  claimed for {}  by {}/{}{}",
                    conflict.conflict_id,
                    conflict.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                    conflict.subject_key,
                    conflict.holder,
                    conflict.claimant,
                    conflict.source,
                    conflict.event_id,
                    conflict.resolution.map(|r| format!("  ({r})")).unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Identite { command: IdentiteCommand::Resolve { conflict, decision, by } } => {
            let by = passerelle_domain::AgentUid::parse(&by).map_err(|e| anyhow::anyhow!("--by: {e}"))?;
            let decision = passerelle_eventlog::identity::Decision::parse(&decision)
                .ok_or_else(|| anyhow::anyhow!("--decision: confirm, reject or merge"))?;
            let pool = passerelle::connect(&config).await?;
            let decision = passerelle_projector::identite::decision_for(&pool, conflict, decision, by.as_str()).await?;
            passerelle::publish_identity_decision(&config, &decision).await?;
            println!(
                "decision {} on conflict #{conflict} published ({}); the projection applies it",
                decision.decision_id,
                decision.decision.code().to_ascii_lowercase()
            );
            Ok(())
        }
        Command::Dlq { command: DlqCommand::Replay { id } } => {
            match passerelle::replay_dead_letter(&config, id).await? {
                passerelle_projector::dlq::Replayed::Settled => println!("dead letter #{id} applied"),
                passerelle_projector::dlq::Replayed::StillFailing(reason) => {
                    println!("dead letter #{id} still fails: {reason}");
                    std::process::exit(3);
                }
            }
            Ok(())
        }
        Command::Retention => {
            let pool = passerelle::connect(&config).await?;
            let cutoff = chrono::Utc::now() - chrono::Duration::days(config.retention_days);
            let keys = passerelle::key_store(&config, &pool).await?;
            let erased = passerelle_projector::erase::retention(&pool, &keys, cutoff).await?;
            println!("retention: {erased} persons without contact since {} erased", cutoff.date_naive());
            Ok(())
        }
        Command::Import { .. } => unreachable!("handled before the configuration is read"),
        Command::Dev { command: DevCommand::Token { agent, key, ttl } } => {
            println!("{}", passerelle::dev_token(&config, &agent, &key, ttl)?);
            Ok(())
        }
        Command::Dev { command: DevCommand::Pki { out } } => {
            let institutions = passerelle_ingest::institutions::Institutions::load(&config.institutions_file)
                .map_err(anyhow::Error::msg)?;
            let issued = passerelle::pki::issue_dev_pki(&out, &institutions)?;
            println!("development credentials in {}: CA, server (localhost), and {}", out.display(), issued.join(", "));
            println!("for development only: production institutions use certificates of a real PKI");
            Ok(())
        }
    }
}

/// Runs an import; returns the exit status.
async fn import(file: ImportFile) -> anyhow::Result<i32> {
    let (label, path, connection) = match &file {
        ImportFile::CnafFlux { file, connection, .. } => ("foyers", file.clone(), connection),
        ImportFile::FtCsv { file, connection } => ("rows", file.clone(), connection),
        ImportFile::StructureCsv { file, connection } => ("rows", file.clone(), connection),
    };
    let credentials =
        passerelle_ingest::client::Credentials::from_dir(&connection.credentials, &connection.institution)
            .map_err(anyhow::Error::msg)?;
    let channel = passerelle_ingest::client::connect(&connection.hub, &credentials).await.with_context(|| {
        format!("cannot reach the hub at {} (is it running? infra/up.sh starts one)", connection.hub)
    })?;
    let quiet = connection.quiet;
    let relaying = matches!(file, ImportFile::CnafFlux { relay: true, .. });
    let id_key_path = match (&connection.id_key, relaying) {
        (Some(path), _) => path.clone(),
        (None, true) => anyhow::bail!(
            "a relayed flux keeps the caisse's fact ids: give the caisse's id key with --id-key (e.g. {}/caf-521.idkey)",
            connection.credentials.display()
        ),
        (None, false) => connection.credentials.join(format!("{}.idkey", connection.institution)),
    };
    let id_key = passerelle_importers::IdKey::from_file(&id_key_path)?;
    let outcome = match file {
        ImportFile::CnafFlux { relay, .. } => {
            passerelle_importers::import_cnaf_flux(&path, channel, &id_key, relay, quiet).await
        }
        ImportFile::FtCsv { .. } => passerelle_importers::import_ft_csv(&path, channel, &id_key, quiet).await,
        ImportFile::StructureCsv { .. } => {
            passerelle_importers::import_structure_csv(&path, channel, &id_key, quiet).await
        }
    };
    match outcome {
        Ok(summary) => {
            print!("{}", summary.render(label));
            Ok(if summary.refused == 0 { 0 } else { 3 })
        }
        Err(error) => {
            eprintln!("import failed: {error:#}");
            Ok(1)
        }
    }
}

async fn run(config: &Config, demo_credentials: Option<PathBuf>) -> anyhow::Result<()> {
    run_services(config, demo_credentials, passerelle::Services::ALL).await
}

async fn run_services(
    config: &Config,
    demo_credentials: Option<PathBuf>,
    services: passerelle::Services,
) -> anyhow::Result<()> {
    // Listening for SIGTERM before anything starts: a stop asked during the start (an operator,
    // a supervisor, a test) is then a clean shutdown once started, never the default death.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut running = passerelle::start_services(config, services).await?;
    println!("Passerelle is up.\n{}", running.addresses());
    if let Some(credentials) = demo_credentials {
        let endpoint = format!("https://localhost:{}", running.grpc_addr.port());
        let accepted = passerelle::demo::push(&endpoint, &credentials).await?;
        println!("demo: {accepted} events pushed through the gRPC API and acknowledged by the broker");
    }
    println!("Stop with Ctrl-C (or SIGTERM): in-flight calls finish first.");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        outcome = running.wait() => return outcome,
    }
    tracing::info!("shutting down");
    running.shutdown().await
}
