//! Drives an import: the file is parsed on a blocking thread, its events stream through the
//! hub's PublishBatch (bounded channel: memory stays flat whatever the file size), each reply
//! is counted, progress is printed, and a summary says what was sent and what was refused.

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use passerelle_domain::territory::TO_ASSIGN;
use passerelle_ingest::proto::{BatchReply, batch_reply};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// What the parsing thread sends: an event with the file line it comes from, or a fact the
/// importer could not turn into an event.
pub enum Item<T> {
    Event {
        line: u64,
        event: T,
    },
    Refused {
        line: u64,
        reason: String,
    },
    /// Something odd about the file that does not stop the import.
    Warning(String),
}

/// Counters the parser updates as it reads.
#[derive(Default)]
pub struct Progress {
    pub records: AtomicU64,
    pub persons: AtomicU64,
}

/// The outcome of an import.
#[derive(Debug, Default)]
pub struct Summary {
    pub records: u64,
    pub persons: u64,
    pub sent: u64,
    pub accepted: u64,
    /// Accepted facts that wait "à affecter": received by département 69 with a commune that
    /// does not say whether they are the Métropole de Lyon's or the Rhône's.
    pub to_assign: u64,
    pub refused: u64,
    /// Refusal reasons (field and rule, or the importer's reason) with their counts.
    pub reasons: BTreeMap<String, u64>,
    /// The first refusals with their line, to find them in the file.
    pub examples: Vec<(u64, String)>,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

impl Summary {
    fn refuse(&mut self, line: u64, reason: String) {
        self.refused += 1;
        *self.reasons.entry(reason.clone()).or_default() += 1;
        if self.examples.len() < 20 {
            self.examples.push((line, reason));
        }
    }

    /// The summary as a user reads it.
    pub fn render(&self, record_name: &str) -> String {
        let mut text = format!(
            "{} {record_name}, {} persons; {} events sent, {} accepted, {} refused ({:.1} s, {:.0} events/s)\n",
            self.records,
            self.persons,
            self.sent,
            self.accepted,
            self.refused,
            self.seconds,
            self.sent as f64 / self.seconds.max(0.001)
        );
        if self.to_assign > 0 {
            text.push_str(&format!(
                "{} accepted facts wait for their authority (received by 069, commune outside the Rhône): \
                 `passerelle territoires a-affecter` lists them; the caisse corrects each with 69M or 69D\n",
                self.to_assign
            ));
        }
        for warning in &self.warnings {
            text.push_str(&format!("warning: {warning}\n"));
        }
        if !self.reasons.is_empty() {
            text.push_str("refused, by reason:\n");
            for (reason, count) in &self.reasons {
                text.push_str(&format!("  {count:>8}  {reason}\n"));
            }
            text.push_str("first refusals:\n");
            for (line, reason) in &self.examples {
                text.push_str(&format!("  line {line}: {reason}\n"));
            }
        }
        text
    }
}

fn reason_of(reply: &BatchReply) -> String {
    if reply.violations.is_empty() {
        return reply.message.clone();
    }
    reply.violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
}

/// Runs an import. `parse` runs on a blocking thread and sends items; `publish` opens the
/// PublishBatch stream of the family. Fails if the file is invalid (with the parser's error)
/// or the hub stops answering.
pub async fn run<T, P, F, Fut>(
    label: &'static str,
    parse: P,
    publish: F,
    progress: Arc<Progress>,
    quiet: bool,
) -> anyhow::Result<Summary>
where
    T: Send + 'static,
    P: FnOnce(mpsc::Sender<Item<T>>) -> anyhow::Result<()> + Send + 'static,
    F: FnOnce(Request<futures::stream::BoxStream<'static, T>>) -> Fut,
    Fut: Future<Output = Result<Response<Streaming<BatchReply>>, Status>>,
{
    let started = Instant::now();
    let (sender, receiver) = mpsc::channel::<Item<T>>(1024);
    let parser = tokio::task::spawn_blocking(move || parse(sender));

    let summary = Arc::new(Mutex::new(Summary::default()));
    let lines: Arc<Mutex<VecDeque<u64>>> = Arc::default();
    let sent = Arc::new(AtomicU64::new(0));
    let events = {
        let summary = summary.clone();
        let lines = lines.clone();
        let sent = sent.clone();
        ReceiverStream::new(receiver).filter_map(move |item| {
            let outcome = match item {
                Item::Event { line, event } => {
                    if let Ok(mut pending) = lines.lock() {
                        pending.push_back(line);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    Some(event)
                }
                Item::Refused { line, reason } => {
                    if let Ok(mut summary) = summary.lock() {
                        summary.refuse(line, reason);
                    }
                    None
                }
                Item::Warning(warning) => {
                    if let Ok(mut summary) = summary.lock() {
                        summary.warnings.push(warning);
                    }
                    None
                }
            };
            futures::future::ready(outcome)
        })
    };

    let ticker = (!quiet).then(|| {
        let summary = summary.clone();
        let sent = sent.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(2));
            interval.tick().await;
            loop {
                interval.tick().await;
                let (accepted, refused) = summary.lock().map(|s| (s.accepted, s.refused)).unwrap_or_default();
                let sent = sent.load(Ordering::Relaxed);
                eprintln!(
                    "{label}: {} records read, {sent} events sent, {accepted} accepted, {refused} refused ({:.0} events/s)",
                    progress.records.load(Ordering::Relaxed),
                    sent as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    });

    let outcome = async {
        let mut replies = publish(Request::new(events.boxed())).await?.into_inner();
        while let Some(reply) = replies.next().await {
            let reply = reply?;
            let line = lines.lock().ok().and_then(|mut pending| pending.pop_front()).unwrap_or_default();
            let mut summary = summary.lock().map_err(|_| Status::internal("summary lock"))?;
            if reply.status == batch_reply::Status::Accepted as i32 {
                summary.accepted += 1;
                if reply.published.as_ref().is_some_and(|published| published.territory == TO_ASSIGN) {
                    summary.to_assign += 1;
                }
            } else {
                summary.refuse(line, reason_of(&reply));
            }
        }
        Ok::<_, Status>(())
    }
    .await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let parsed = parser.await?;
    // A file error explains more than the stream that ended because of it.
    parsed?;
    outcome.map_err(|status| {
        anyhow::anyhow!(
            "the hub stopped answering ({}: {}); re-run the import: event ids are derived from the facts, nothing is duplicated",
            status.code(),
            status.message()
        )
    })?;
    let mut summary = std::mem::take(&mut *summary.lock().map_err(|_| anyhow::anyhow!("summary lock"))?);
    summary.sent = sent.load(Ordering::Relaxed);
    summary.records = progress.records.load(Ordering::Relaxed);
    summary.persons = progress.persons.load(Ordering::Relaxed);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
