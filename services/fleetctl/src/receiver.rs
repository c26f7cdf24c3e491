//! `fleetctl receiver`: a reference clinic-side `fleet.clinic.v1.AlarmReceiver`
//! (contract §4). It is what a clinic integrator starts from, and what the notifier's
//! tests page.
//!
//! Each page is checked in this order: signature (nothing about an unauthenticated page
//! is trusted, not even its clinic), alarm fields, clinic; then deduplicated on
//! `(alarm_id, revision, escalation)` and, if new, appended to a JSON Lines file and
//! fsynced before the receipt goes out: a receipt means the page is durable. The file
//! is read back on start, so a restarted receiver still recognises what it has recorded.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, SubsecRound, Utc};
use fleet_core::AlarmEvent;
use fleet_core::protobuf::alarm_of_notification;
use fleet_core::signing::{SIGNATURE_METADATA_KEY, check_page};
use fleet_proto::clinic::v1::alarm_receiver_server::{AlarmReceiver, AlarmReceiverServer};
use fleet_proto::clinic::v1::{AlarmNotification, DeliveryReceipt};
use fleet_proto::prost::Message;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// Where the receiver listens unless told otherwise (the registry example's webhook).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50070";

/// The secret shared with the fleet for page signatures. Never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(secret: impl Into<Vec<u8>>) -> anyhow::Result<Self> {
        let secret = secret.into();
        // An empty key still yields an HMAC, but one anybody can compute.
        anyhow::ensure!(!secret.is_empty(), "the receiver secret is empty");
        Ok(Secret(secret))
    }
}

impl FromStr for Secret {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Secret::new(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How to run a receiver.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Port 0 picks a free port; [`Receiver::local_addr`] says which.
    pub listen: SocketAddr,
    /// JSON Lines file of recorded pages.
    pub out: PathBuf,
    pub secret: Secret,
    /// When set, pages addressed to another clinic are refused as misrouted.
    pub clinic_id: Option<String>,
    /// Wait this long before answering each request (a slow clinic, for tests).
    pub delay: Duration,
    /// Serve TLS with this certificate and key instead of plain HTTP/2.
    pub tls: Option<TlsFiles>,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The server identity; an unreadable or empty file is an error naming it.
    fn server_config(&self) -> anyhow::Result<ServerTlsConfig> {
        let read = |path: &Path, what: &str| -> anyhow::Result<Vec<u8>> {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the TLS {what} {}", path.display()))?;
            anyhow::ensure!(
                String::from_utf8_lossy(&pem).contains("-----BEGIN "),
                "the TLS {what} {} is not PEM",
                path.display()
            );
            Ok(pem)
        };
        let identity =
            Identity::from_pem(read(&self.cert, "certificate")?, read(&self.key, "key")?);
        Ok(ServerTlsConfig::new().identity(identity))
    }
}

/// One line of the out file: the alarm event's contract JSON fields, then how and
/// when it reached this receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedPage {
    #[serde(flatten)]
    pub alarm: AlarmEvent,
    pub clinic_id: String,
    pub delivery_attempt: u32,
    pub escalation: u32,
    pub received_at: DateTime<Utc>,
    pub receipt_id: String,
}

/// The receiver's deduplication key. `escalation` is part of it: an escalation is a new
/// page to the clinic, not a retry of the original.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    alarm_id: String,
    revision: u32,
    escalation: u32,
}

impl RecordedPage {
    fn key(&self) -> PageKey {
        PageKey {
            alarm_id: self.alarm.alarm_id.clone(),
            revision: self.alarm.revision,
            escalation: self.escalation,
        }
    }
}

/// The receipt id of a page: deterministic, so a duplicate gets the first answer again
/// even across restarts.
pub fn receipt_id(alarm_id: &str, revision: u32, escalation: u32) -> String {
    format!("rcpt-{alarm_id}#{revision}#{escalation}")
}

/// Reads every page recorded in `path`; a line that is not one is an error naming it.
pub fn read_pages(path: &Path) -> anyhow::Result<Vec<RecordedPage>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_pages(path, &bytes)?.pages)
}

struct ParsedPages {
    pages: Vec<RecordedPage>,
    /// The last line has no line end (a write cut short by a crash, or an editor).
    unterminated: bool,
}

fn parse_pages(path: &Path, bytes: &[u8]) -> anyhow::Result<ParsedPages> {
    let mut pages = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let page: RecordedPage = serde_json::from_slice(line).with_context(|| {
            format!(
                "{} line {}: not a recorded page (fix or remove the line; \
                 the receiver will not start over a file it cannot read back)",
                path.display(),
                index + 1
            )
        })?;
        pages.push(page);
    }
    Ok(ParsedPages {
        pages,
        unterminated: bytes.last().is_some_and(|&b| b != b'\n'),
    })
}

/// The out file and what it holds. Every change goes through one lock, so the set of
/// receipts and the file never disagree, whatever the concurrency.
struct Journal {
    path: PathBuf,
    file: File,
    /// Length of the file up to the last complete record, to take back a partial write.
    len: u64,
    receipts: HashMap<PageKey, String>,
    /// Set when a failed write could not be taken back: the file's tail is unknown, so
    /// nothing more is recorded until a restart reads the file back.
    broken: Option<String>,
}

enum Recorded {
    New(String),
    Duplicate(String),
}

impl Journal {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening {} for appending", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("reading back {}", path.display()))?;
        let parsed = parse_pages(path, &bytes)?;
        let mut len = bytes.len() as u64;
        if parsed.unterminated {
            // The last line parsed, so the page is recorded; end it so the next record
            // starts on its own line.
            file.write_all(b"\n")
                .and_then(|()| file.sync_data())
                .with_context(|| format!("ending the last line of {}", path.display()))?;
            len += 1;
        }
        // A newly created file is durable only once its directory entry is.
        sync_parent_dir(path)?;
        let mut receipts = HashMap::with_capacity(parsed.pages.len());
        for page in parsed.pages {
            // A repeated key keeps the receipt given first.
            receipts.entry(page.key()).or_insert(page.receipt_id);
        }
        Ok(Journal {
            path: path.to_owned(),
            file,
            len,
            receipts,
            broken: None,
        })
    }

    /// Appends `page` unless its key is already recorded; returns the receipt id.
    fn record(&mut self, page: &RecordedPage) -> Result<Recorded, Status> {
        if let Some(receipt) = self.receipts.get(&page.key()) {
            return Ok(Recorded::Duplicate(receipt.clone()));
        }
        if let Some(why) = &self.broken {
            return Err(Status::unavailable(format!(
                "receiver cannot record pages until restarted: {why}"
            )));
        }
        let mut line = serde_json::to_vec(page)
            .map_err(|e| Status::internal(format!("cannot serialize the page: {e}")))?;
        line.push(b'\n');
        if let Err(e) = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
        {
            let failure = format!("writing {}: {e}", self.path.display());
            // Take back whatever part of the line was written, so the file stays one
            // record per line and the sender's retry is recorded cleanly.
            if let Err(undo) = self.file.set_len(self.len) {
                self.broken = Some(format!(
                    "{failure}; then truncating it back to {} bytes: {undo}",
                    self.len
                ));
            }
            tracing::error!(error = %failure, "page not recorded");
            return Err(Status::unavailable(format!("page not recorded: {failure}")));
        }
        self.len += line.len() as u64;
        self.receipts.insert(page.key(), page.receipt_id.clone());
        Ok(Recorded::New(page.receipt_id.clone()))
    }
}

fn sync_parent_dir(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// The gRPC service.
struct Pager {
    secret: Secret,
    clinic_id: Option<String>,
    delay: Duration,
    journal: Arc<Mutex<Journal>>,
}

impl Pager {
    /// Records the page; the receipt, and whether the page was new.
    async fn handle(
        &self,
        request: Request<AlarmNotification>,
    ) -> Result<(DeliveryReceipt, bool), Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown peer".to_owned(), |a| a.to_string());
        let refuse = |status: Status| {
            tracing::warn!(%peer, code = ?status.code(), reason = status.message(), "page refused");
            status
        };
        self.authenticate(&request).map_err(refuse)?;
        let notification = request.into_inner();
        let alarm = alarm_of_notification(&notification)
            .map_err(|e| refuse(Status::invalid_argument(e.to_string())))?;
        if alarm.alarm_id.is_empty() {
            return Err(refuse(Status::invalid_argument(
                "invalid alarm event: alarm_id: empty (it is the deduplication key)",
            )));
        }
        if let Some(expected) = self
            .clinic_id
            .as_ref()
            .filter(|expected| **expected != notification.clinic_id)
        {
            return Err(refuse(Status::invalid_argument(format!(
                "misrouted page: addressed to clinic {:?}, this receiver is clinic {expected:?}",
                notification.clinic_id
            ))));
        }
        let page = RecordedPage {
            receipt_id: receipt_id(&alarm.alarm_id, alarm.revision, notification.escalation),
            alarm,
            clinic_id: notification.clinic_id,
            delivery_attempt: notification.delivery_attempt,
            escalation: notification.escalation,
            received_at: Utc::now().trunc_subsecs(3),
        };
        // The append and fsync block; on the blocking pool they hold no async worker,
        // and a spawned task finishes even if the caller gives up, so a page is never
        // half-recorded.
        let journal = Arc::clone(&self.journal);
        let outcome = tokio::task::spawn_blocking(move || {
            let mut journal = journal
                .lock()
                .map_err(|_| Status::internal("receiver state poisoned by an earlier panic"))?;
            journal.record(&page).map(|r| (r, page))
        })
        .await
        .map_err(|e| Status::internal(format!("recording task failed: {e}")))??;
        let (receipt_id, new) = match outcome {
            (Recorded::New(receipt_id), page) => {
                tracing::info!(
                    %peer,
                    alarm_id = page.alarm.alarm_id,
                    revision = page.alarm.revision,
                    escalation = page.escalation,
                    delivery_attempt = page.delivery_attempt,
                    kind = page.alarm.kind.name(),
                    priority = page.alarm.priority.name(),
                    %receipt_id,
                    "page recorded"
                );
                (receipt_id, true)
            }
            (Recorded::Duplicate(receipt_id), page) => {
                tracing::info!(
                    %peer,
                    delivery_attempt = page.delivery_attempt,
                    %receipt_id,
                    "duplicate page, answered with its first receipt"
                );
                (receipt_id, false)
            }
        };
        Ok((
            DeliveryReceipt {
                accepted: true,
                receipt_id,
            },
            new,
        ))
    }

    /// The signature covers the page's protobuf bytes; prost re-encodes a decoded page
    /// to the bytes the sender signed (fields in number order, evidence map sorted).
    fn authenticate(&self, request: &Request<AlarmNotification>) -> Result<(), Status> {
        let signature = request
            .metadata()
            .get(SIGNATURE_METADATA_KEY)
            .map(|value| value.to_str().unwrap_or_default());
        check_page(
            &self.secret.0,
            &request.get_ref().encode_to_vec(),
            signature,
        )
        .map_err(|e| Status::unauthenticated(e.to_string()))
    }
}

#[tonic::async_trait]
impl AlarmReceiver for Pager {
    async fn deliver(
        &self,
        request: Request<AlarmNotification>,
    ) -> Result<Response<DeliveryReceipt>, Status> {
        let answer = self.handle(request).await;
        // After recording a new page, not before: a slow clinic that has the page but
        // whose receipt arrives too late is the case the sender's retries and our
        // deduplication are for; the retry, a duplicate, is answered at once.
        if matches!(answer, Ok((_, true))) && !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        answer.map(|(receipt, _)| Response::new(receipt))
    }
}

/// How long a stopping receiver waits for open connections beyond its answer delay.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// A receiver with its out file read back and its socket bound, not yet serving.
#[derive(Debug)]
pub struct Receiver {
    incoming: TcpIncoming,
    local_addr: SocketAddr,
    tls: Option<ServerTlsConfig>,
    service: Pager,
}

impl fmt::Debug for Pager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pager")
            .field("clinic_id", &self.clinic_id)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Reads back the out file (refusing to start over a line it cannot read), then
    /// binds the listening socket.
    pub async fn bind(config: ReceiverConfig) -> anyhow::Result<Self> {
        if config.clinic_id.as_deref() == Some("") {
            bail!("the clinic id is empty (omit --clinic-id to accept pages for any clinic)");
        }
        let tls = config
            .tls
            .as_ref()
            .map(TlsFiles::server_config)
            .transpose()?;
        let out = config.out.clone();
        let journal = tokio::task::spawn_blocking(move || Journal::open(&out))
            .await
            .context("reading back the out file")??;
        let incoming = TcpIncoming::bind(config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = incoming
            .local_addr()
            .with_context(|| format!("local address of the socket bound to {}", config.listen))?;
        Ok(Receiver {
            incoming,
            local_addr,
            tls,
            service: Pager {
                secret: config.secret,
                clinic_id: config.clinic_id,
                delay: config.delay,
                journal: Arc::new(Mutex::new(journal)),
            },
        })
    }

    /// The address actually bound (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets requests in
    /// flight finish (their pages are recorded and answered), for at most the answer
    /// delay plus [`DRAIN_LIMIT`].
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr;
        let drain_limit = self.service.delay + DRAIN_LIMIT;
        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = builder
                .tls_config(tls)
                .with_context(|| format!("TLS for the receiver on {addr}"))?;
        }
        let server = builder
            .add_service(AlarmReceiverServer::new(self.service))
            .serve_with_incoming_shutdown(self.incoming, shutdown.clone().cancelled_owned());
        tokio::pin!(server);
        let served = tokio::select! {
            served = &mut server => served,
            () = shutdown.cancelled() => match tokio::time::timeout(drain_limit, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    // HTTP/2 graceful shutdown waits for each client to acknowledge it;
                    // a client that never does must not keep the receiver up.
                    tracing::warn!(?drain_limit, "connections still open at shutdown; closing them");
                    Ok(())
                }
            },
        };
        served.with_context(|| format!("serving AlarmReceiver on {addr}"))
    }
}

/// Binds, prints `listening on ADDR` on stderr (callers that asked for port 0 read the
/// port from it), and serves until `shutdown`.
pub async fn serve(config: ReceiverConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let out = config.out.clone();
    let receiver = Receiver::bind(config).await?;
    eprintln!("listening on {}", receiver.local_addr());
    tracing::info!(addr = %receiver.local_addr(), out = %out.display(), "receiver started");
    receiver.run(shutdown).await?;
    tracing::info!("receiver stopped");
    Ok(())
}
