//! `fleetctl`: the operator's command line. Parsing and exit codes live here; the
//! commands themselves are in the library so tests call them directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use fleet_runtime::Endpoints;
use fleetctl::receiver::{ReceiverConfig, Secret};

#[derive(Debug, Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "Operate the implanted-pump monitoring fleet"
)]
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with reading files (JSON Lines, the contract's JSON form).
    Readings {
        #[command(subcommand)]
        command: ReadingsCommand,
    },
    /// Check the infrastructure the endpoints point at.
    Stack {
        #[command(subcommand)]
        command: StackCommand,
    },
    /// The registry (contract §5) in PostgreSQL.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Run a reference clinic AlarmReceiver (gRPC): verify each page's signature,
    /// deduplicate on (alarm_id, revision, escalation), append new pages to a JSON Lines
    /// file (fsynced before the receipt). Stops on SIGTERM or Ctrl-C.
    Receiver(ReceiverArgs),
    /// Users of the fleet API and the dashboard, and their access tokens.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Make a local CA and the MQTT link's certificates (broker, ingest, operator, one
    /// per gateway with CN = gateway id) for the local stack, the demo and tests.
    /// Idempotent: reuses the CA, keeps what exists (--renew issues leaves again). Keys
    /// are written 0600 and never printed. See docs/security.md.
    Certs(CertsArgs),
    /// Reports over the archive for post-market surveillance (definitions in
    /// docs/surveillance.md). Windows are [--from, --to) in UTC.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Make a user and print its access token (shown this once; only its SHA-256 is
    /// kept). A clinic's user sees and acknowledges only that clinic's pumps; the
    /// manufacturer's reads the whole fleet, device data only.
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The clinic (registry id) of a clinic's user.
        #[arg(long, required_if_eq("role", "clinic"))]
        clinic: Option<String>,
    },
    /// Give a user a new token (printed); the old one stops working at once.
    Rotate { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    Clinic,
    Manufacturer,
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Per model and firmware: pump-days, alarms per kind per 1,000 pump-days, median
    /// battery drain per year, occlusion incidence, and Kaplan-Meier survival free of
    /// failure (table in the report, curves in an SVG file).
    Surveillance {
        #[command(flatten)]
        window: WindowArgs,
        #[arg(long, value_enum, default_value = "md")]
        format: fleet_report::surveillance::Format,
        /// Where the Kaplan-Meier chart is written.
        #[arg(long, default_value = "surveillance-survival.svg")]
        svg: PathBuf,
    },
    /// One pump's timeline: readings (downsampled), its events, alarms, pages and
    /// acknowledgements as CSV, and an SVG chart of reservoir, battery and catheter
    /// pressure with events and alarms marked.
    Pump {
        pump_id: String,
        #[command(flatten)]
        window: WindowArgs,
        /// Write the CSV here instead of standard output.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Where the chart is written [default: PUMP_ID.svg].
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct WindowArgs {
    /// Start of the window, included: YYYY-MM-DD (midnight UTC) or an RFC 3339 time.
    #[arg(long, value_parser = fleet_report::parse_time)]
    from: DateTime<Utc>,
    /// End of the window, excluded: YYYY-MM-DD (midnight UTC) or an RFC 3339 time.
    #[arg(long, value_parser = fleet_report::parse_time)]
    to: DateTime<Utc>,
}

#[derive(Debug, Args)]
struct ReceiverArgs {
    /// Address to serve on. Port 0 picks a free port; the bound address is printed on
    /// stderr as `listening on ADDR`.
    #[arg(long, default_value = fleetctl::receiver::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// JSON Lines file the pages are appended to; read back on start, so deduplication
    /// survives a restart.
    #[arg(long)]
    out: PathBuf,
    /// Secret shared with the fleet for page signatures (x-fleet-signature). Prefer the
    /// environment variable: command lines are visible to other users.
    #[arg(long, env = "FLEET_RECEIVER_SECRET", hide_env_values = true)]
    secret: Secret,
    /// This clinic's id: pages addressed to another clinic are refused as misrouted.
    #[arg(long)]
    clinic_id: Option<String>,
    /// Wait this long before answering each request (after recording the page), to
    /// play a slow clinic in tests, e.g. `2s`. Duplicates are answered at once.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Serve TLS with this PEM certificate (chain); needs --tls-key. The fleet then
    /// pages this receiver at an `https://` webhook.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// Directory to write to (made if missing): ca.crt/.key, server.crt/.key,
    /// clients/{identity}.crt/.key. FLEET_MQTT_CERT_DIR is its `clients` directory.
    #[arg(long)]
    out: PathBuf,
    /// A gateway to issue a certificate for (repeatable).
    #[arg(long = "gateway", value_name = "GATEWAY_ID")]
    gateways: Vec<String>,
    /// Issue a certificate for every gateway of this registry file (contract §5).
    #[arg(long, value_name = "REGISTRY")]
    gateways_from: Vec<PathBuf>,
    /// Another name (DNS name or IP address) for the broker's certificate, besides
    /// 127.0.0.1 and localhost (repeatable).
    #[arg(long)]
    server_name: Vec<String>,
    /// Issue the broker's and clients' certificates again under the same CA (rotation).
    #[arg(long)]
    renew: bool,
}

#[derive(Debug, Subcommand)]
enum ReadingsCommand {
    /// Count valid readings; name each invalid line and why. Exits 1 if any is invalid.
    Validate {
        /// JSON Lines file, plain or gzip; `-` reads standard input.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Load a registry file: checked whole first (unknown keys, duplicates, dangling
    /// references are rejected with their line, exit 1), then applied in one
    /// transaction. Importing the same file twice changes nothing.
    Import {
        file: PathBuf,
        /// Also remove clinics and pumps that are not in the file (without it they are
        /// kept: a partial file must not silently unassign pumps).
        #[arg(long)]
        prune: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StackCommand {
    /// A real round trip to each component: MQTT publish/subscribe, a Kafka metadata
    /// request, `SELECT 1`. Exits 1 if any fails.
    Status,
}

/// Exit status for "the input or a component is bad" (1) versus "could not run" (2).
const EXIT_CANNOT_RUN: u8 = 2;

fn main() -> ExitCode {
    fleet_runtime::init_logging();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Readings {
            command: ReadingsCommand::Validate { file },
        } => fleetctl::readings::validate_path(&file).map(|summary| summary.all_valid()),
        Command::Stack {
            command: StackCommand::Status,
        } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(fleetctl::stack::print_status(&cli.endpoints))),
        Command::Registry {
            command: RegistryCommand::Import { file, prune },
        } => import_registry(&cli.endpoints.database_url, &file, prune),
        Command::Receiver(args) => run_receiver(args).map(|()| true),
        Command::Certs(args) => run_certs(args).map(|()| true),
        Command::Report { command } => run_report(&cli.endpoints.database_url, command),
        Command::User { command } => run_user(&cli.endpoints.database_url, command),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fleetctl: {e:#}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

fn run_certs(args: CertsArgs) -> anyhow::Result<()> {
    let mut gateways = args.gateways;
    for registry in &args.gateways_from {
        gateways.extend(fleetctl::certs::gateways_of_registry(registry)?);
    }
    let report = fleetctl::certs::make(&fleetctl::certs::CertsPlan {
        out: args.out.clone(),
        gateways,
        server_names: args.server_name,
        renew: args.renew,
    })?;
    eprintln!(
        "fleetctl: certificates in {} ({}; {} issued, {} kept); FLEET_MQTT_CA_FILE={} FLEET_MQTT_CERT_DIR={}",
        args.out.display(),
        if report.ca_created {
            "new CA"
        } else {
            "CA reused"
        },
        report.issued.len(),
        report.kept,
        args.out.join("ca.crt").display(),
        fleetctl::certs::clients_dir(&args.out).display(),
    );
    Ok(())
}

/// `Ok(false)` (exit 1) for a bad file, `Err` (exit 2) when it could not run.
fn import_registry(
    database_url: &str,
    file: &std::path::Path,
    prune: bool,
) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Runtime::new()?;
    match runtime.block_on(fleetctl::registry::import_file(
        database_url,
        file,
        prune,
        std::io::stdout().lock(),
    )) {
        Ok(_) => Ok(true),
        Err(fleetctl::registry::ImportError::File { path, source }) => {
            eprintln!("fleetctl: registry rejected, nothing imported: {path}: {source}");
            Ok(false)
        }
        Err(fleetctl::registry::ImportError::CannotRun(e)) => Err(e),
    }
}

/// Prints the token on stdout (and nothing else there, for scripts); `Ok(false)`
/// (exit 1) when refused.
fn run_user(database_url: &str, command: UserCommand) -> anyhow::Result<bool> {
    use fleet_store::access::Role;
    use fleetctl::users::{self, UserError};
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(async {
        match command {
            UserCommand::Add { name, role, clinic } => {
                let role = match (role, clinic) {
                    (RoleArg::Clinic, Some(clinic)) => Role::Clinic(clinic),
                    (RoleArg::Clinic, None) => {
                        return Err(UserError::Refused(
                            "--clinic is required for --role clinic".into(),
                        ));
                    }
                    (RoleArg::Manufacturer, None) => Role::Manufacturer,
                    (RoleArg::Manufacturer, Some(_)) => {
                        return Err(UserError::Refused(
                            "--clinic is for clinic users; the manufacturer's sees every clinic"
                                .into(),
                        ));
                    }
                };
                let token = users::add(database_url, &name, &role).await?;
                eprintln!("fleetctl: user '{name}' added; its token (shown once):");
                Ok(token)
            }
            UserCommand::Rotate { name } => {
                let token = users::rotate(database_url, &name).await?;
                eprintln!("fleetctl: user '{name}' has a new token (the old one no longer works):");
                Ok(token)
            }
        }
    });
    match outcome {
        Ok(token) => {
            println!("{token}");
            Ok(true)
        }
        Err(UserError::Refused(why)) => {
            eprintln!("fleetctl: {why}");
            Ok(false)
        }
        Err(UserError::CannotRun(e)) => Err(e),
    }
}

/// `Ok(false)` (exit 1) for a bad window or an unknown pump, `Err` (exit 2) when the
/// report could not be made.
fn run_report(database_url: &str, command: ReportCommand) -> anyhow::Result<bool> {
    use fleet_report::{ReportError, Window};
    let runtime = tokio::runtime::Runtime::new()?;
    let mut stdout = std::io::stdout().lock();
    let outcome = runtime.block_on(async {
        match command {
            ReportCommand::Surveillance {
                window,
                format,
                svg,
            } => {
                let window = Window::new(window.from, window.to)?;
                fleet_report::write_surveillance(database_url, window, format, &svg, &mut stdout)
                    .await?;
                eprintln!("fleetctl: survival chart written to {}", svg.display());
                Ok::<(), ReportError>(())
            }
            ReportCommand::Pump {
                pump_id,
                window,
                csv,
                svg,
            } => {
                let window = Window::new(window.from, window.to)?;
                let svg = svg.unwrap_or_else(|| PathBuf::from(format!("{pump_id}.svg")));
                let rows = fleet_report::write_pump(
                    database_url,
                    &pump_id,
                    window,
                    csv.as_deref(),
                    &svg,
                    &mut stdout,
                )
                .await?;
                eprintln!(
                    "fleetctl: {rows} timeline rows{}; chart written to {}",
                    csv.map(|p| format!(" written to {}", p.display()))
                        .unwrap_or_default(),
                    svg.display()
                );
                Ok(())
            }
        }
    });
    match outcome {
        Ok(()) => Ok(true),
        Err(e) if e.is_bad_input() => {
            eprintln!("fleetctl: {e}");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn run_receiver(args: ReceiverArgs) -> anyhow::Result<()> {
    let config = ReceiverConfig {
        listen: args.listen,
        out: args.out,
        secret: args.secret,
        clinic_id: args.clinic_id,
        delay: args.delay,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| fleetctl::receiver::TlsFiles { cert, key }),
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        // Inside the runtime: the signal watcher is a task.
        let shutdown = fleet_runtime::shutdown::on_signal();
        fleetctl::receiver::serve(config, shutdown).await
    })
}
