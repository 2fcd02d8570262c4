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
    },
    /// Runs one service.
    Serve {
        #[command(subcommand)]
        service: Service,
    },
    /// Development helpers.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Subcommand)]
enum Service {
    /// The gRPC ingestion services, with the schema registry and HTTP endpoints.
    Ingest,
}

#[derive(Subcommand)]
enum DevCommand {
    /// Pushes the demo households to a running hub.
    Demo {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        grpc: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref()).context("reading the configuration")?;
    let format = if config.log_format == "json" { LogFormat::Json } else { LogFormat::Pretty };
    passerelle_telemetry::init_logging(format);
    match cli.command {
        Command::Up { demo } => run(&config, demo).await,
        Command::Serve { service: Service::Ingest } => run(&config, false).await,
        Command::Dev { command: DevCommand::Demo { grpc } } => {
            let accepted = passerelle::demo::push(grpc).await?;
            println!("demo: {accepted} events accepted");
            Ok(())
        }
    }
}

async fn run(config: &Config, demo: bool) -> anyhow::Result<()> {
    let mut running = passerelle::start(config).await?;
    println!("Passerelle is up.\n{}", running.addresses());
    if demo {
        let accepted = passerelle::demo::push(format!("http://{}", running.grpc_addr)).await?;
        println!("demo: {accepted} events pushed through the gRPC API and acknowledged by the broker");
    }
    println!("Stop with Ctrl-C (or SIGTERM): in-flight calls finish first.");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        outcome = running.wait() => return outcome,
    }
    tracing::info!("shutting down");
    running.shutdown().await
}
