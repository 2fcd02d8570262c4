//! Projection (and its PostgreSQL baseline), freshness, rebuild and API reads.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use passerelle_domain::Nir;
use passerelle_eventlog::subject::SubjectKeys;
use passerelle_ingest::proto::{
    self, Location, OrientationEvent, Person, orientation_ingest_client::OrientationIngestClient,
};
use sqlx::{PgPool, Row as _};
use uuid::Uuid;

use crate::{
    ingest::Channels,
    population::{Population, departement_institution},
    stack::{Hub, Stack, orientation_agent},
};

/// Percentile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(pool).await?;
    Ok(n)
}

pub struct ProjectionFigures {
    pub applied: i64,
    pub dead_letters: i64,
    pub dossiers: i64,
    /// From the process start to the last event applied.
    pub total: Duration,
    /// From the first sample with events applied to the last event applied.
    pub steady: Duration,
    pub steady_events: i64,
}

/// Starts the whole hub (`passerelle up`) on a log already holding `expected` events and waits
/// until its projection applied them all; the hub keeps running for the next stages.
pub async fn projection(stack: &Stack, expected: u64) -> anyhow::Result<(Hub, ProjectionFigures)> {
    let hub = stack.start(&["up"], "up.log").await?;
    let pool = stack.owner_pool().await?;
    let mut first: Option<(Instant, i64)> = None;
    let mut last_progress = (Instant::now(), -1i64);
    let mut next_report = Instant::now() + Duration::from_secs(5);
    loop {
        let applied = count(&pool, "SELECT count(*) FROM readmodel.applied_events").await?;
        let dead = count(&pool, "SELECT count(*) FROM readmodel.dead_letters").await?;
        let now = Instant::now();
        if applied > 0 && first.is_none() {
            first = Some((now, applied));
        }
        if (applied + dead) as u64 >= expected {
            let (first_at, first_applied) = first.unwrap_or((now, 0));
            let figures = ProjectionFigures {
                applied,
                dead_letters: dead,
                dossiers: count(&pool, "SELECT count(*) FROM readmodel.dossiers").await?,
                total: now - hub.started,
                steady: now - first_at,
                steady_events: applied - first_applied,
            };
            return Ok((hub, figures));
        }
        if applied != last_progress.1 {
            last_progress = (now, applied);
        } else if now - last_progress.0 > Duration::from_secs(180) {
            bail!(
                "the projection made no progress for 180 s at {applied}/{expected} (see {}/up.log)",
                stack.dir.display()
            );
        }
        if now > next_report {
            let rate = first.map_or(0.0, |(at, n)| (applied - n) as f64 / (now - at).as_secs_f64().max(0.001));
            eprintln!("  projection: {applied}/{expected} applied, {dead} dead letters ({rate:.0} events/s)");
            next_report = now + Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `passerelle_projector_folds_total` as the running hub exports it, by (subject, fold).
pub async fn live_folds(stack: &Stack) -> anyhow::Result<HashMap<String, f64>> {
    let text = reqwest::get(format!("{}/metrics", stack.ops)).await?.error_for_status()?.text().await?;
    let mut folds = HashMap::new();
    for line in text.lines().filter(|line| line.starts_with("passerelle_projector_folds_total{")) {
        let label = |name: &str| {
            line.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("").to_owned()
        };
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *folds.entry(format!("{}_{}", label("subject"), label("fold"))).or_default() += value;
    }
    Ok(folds)
}

/// The tables the projection writes, in an order their foreign keys accept.
const PROJECTED_TABLES: &[&str] =
    &["persons", "subject_links", "person_events", "applied_events", "dossiers", "households"];

pub struct PgBaseline {
    pub rows: HashMap<String, i64>,
    pub took: Duration,
}

/// The raw PostgreSQL cost of the projection's writes: the rows it wrote (same tables, same
/// indexes, same values), copied into empty twins with COPY in one transaction.
pub async fn pg_baseline(stack: &Stack) -> anyhow::Result<PgBaseline> {
    let pool = stack.owner_pool().await?;
    let mut connection = pool.acquire().await?;
    sqlx::query("DROP SCHEMA IF EXISTS bench_baseline CASCADE").execute(&mut *connection).await?;
    sqlx::query("CREATE SCHEMA bench_baseline").execute(&mut *connection).await?;
    let mut data = Vec::new();
    let mut rows = HashMap::new();
    for table in PROJECTED_TABLES {
        // A binary from before a table existed (`--binary` of an older build) wrote none.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("readmodel.{table}"))
            .fetch_one(&mut *connection)
            .await?;
        if !exists {
            continue;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE bench_baseline.{table} (LIKE readmodel.{table} INCLUDING ALL)"
        )))
        .execute(&mut *connection)
        .await?;
        let mut out = connection.copy_out_raw(&format!("COPY readmodel.{table} TO STDOUT (FORMAT binary)")).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = out.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        drop(out);
        rows.insert((*table).to_owned(), count(&pool, &format!("SELECT count(*) FROM readmodel.{table}")).await?);
        data.push((*table, bytes));
    }
    let started = Instant::now();
    let mut tx = sqlx::Acquire::begin(&mut *connection).await?;
    for (table, bytes) in &data {
        let mut copy = tx.copy_in_raw(&format!("COPY bench_baseline.{table} FROM STDIN (FORMAT binary)")).await?;
        copy.send(bytes.as_slice()).await?;
        copy.finish().await?;
    }
    tx.commit().await?;
    let took = started.elapsed();
    sqlx::query("DROP SCHEMA bench_baseline CASCADE").execute(&mut *connection).await?;
    Ok(PgBaseline { rows, took })
}

/// A person of the population as the read models know them: NIR, person id, authority.
#[derive(Clone)]
struct Located {
    nir: String,
    person: Uuid,
    authority: String,
}

/// Members of the population located in the read models, in their own authority, without
/// opposition (so their parcours section is shown to the authority's chargé d'orientation).
async fn located_persons(stack: &Stack, population: &Population, limit: usize) -> anyhow::Result<Vec<Located>> {
    let keys = SubjectKeys::new(stack.config.secrets.pepper()?);
    let mut wanted = HashMap::new();
    for household in &population.households {
        for member in &household.members {
            let nir = Nir::parse(&member.nir).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            wanted.insert(keys.nir(&nir).as_str().to_owned(), (member.nir.clone(), household.place.authority));
        }
        if wanted.len() >= limit * 2 {
            break;
        }
    }
    let subject_keys: Vec<String> = wanted.keys().cloned().collect();
    let pool = stack.owner_pool().await?;
    let rows = sqlx::query(
        "SELECT l.subject_key, COALESCE(p.merged_into, p.person_id) AS person_id, d.territory
         FROM readmodel.subject_links l JOIN readmodel.persons p USING (person_id)
         JOIN readmodel.dossiers d ON d.person_id = COALESCE(p.merged_into, p.person_id)
         WHERE l.subject_key = ANY($1) AND d.territory IS NOT NULL AND NOT d.opposition",
    )
    .bind(&subject_keys)
    .fetch_all(&pool)
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let key: String = row.try_get("subject_key")?;
        let territory: String = row.try_get("territory")?;
        let (nir, authority) = &wanted[&key];
        if territory == *authority {
            out.push(Located { nir: nir.clone(), person: row.try_get("person_id")?, authority: territory });
        }
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// A development token per authority's chargé d'orientation.
fn tokens(stack: &Stack) -> anyhow::Result<HashMap<String, String>> {
    let key = stack.dir.join("pki/oidc-dev-key.der");
    let mut out = HashMap::new();
    for place in crate::population::PLACES {
        if !out.contains_key(place.authority) {
            let token = passerelle::dev_token(&stack.config, &orientation_agent(place.authority), &key, 4 * 3600)?;
            out.insert(place.authority.to_owned(), token);
        }
    }
    Ok(out)
}

/// How often the followed pushes' dossiers are read until they show the change: every
/// outstanding probe in one indexed query (the dossier row the API serves), so the probes do
/// not load the API and the journal they would otherwise measure.
pub const POLL: Duration = Duration::from_millis(50);

/// A followed push waiting to become visible.
struct Probe {
    person: Uuid,
    uid: String,
    sent: Instant,
    call: f64,
    seen: tokio::sync::oneshot::Sender<Sample>,
}

/// Reads, every [`POLL`], the référent of every dossier a probe waits on, in one query; answers
/// each probe once its référent shows (or after 30 s, lost). Ends when no probe can come.
async fn watch_probes(pool: PgPool, mut probes: tokio::sync::mpsc::UnboundedReceiver<Probe>) -> anyhow::Result<()> {
    let mut waiting: Vec<Probe> = Vec::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        loop {
            match probes.try_recv() {
                Ok(probe) => waiting.push(probe),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !waiting.is_empty() {
            let persons: Vec<Uuid> = waiting.iter().map(|probe| probe.person).collect();
            let shown: HashMap<Uuid, Option<String>> =
                sqlx::query_as("SELECT person_id, referent_uid FROM readmodel.dossiers WHERE person_id = ANY($1)")
                    .bind(&persons)
                    .fetch_all(&pool)
                    .await?
                    .into_iter()
                    .collect();
            let mut still = Vec::with_capacity(waiting.len());
            for probe in waiting {
                let visible = shown.get(&probe.person).is_some_and(|uid| uid.as_deref() == Some(probe.uid.as_str()));
                if visible {
                    let _ = probe.seen.send(Sample::Visible(probe.call, probe.sent.elapsed().as_secs_f64()));
                } else if probe.sent.elapsed() >= Duration::from_secs(30) {
                    let _ = probe.seen.send(Sample::Lost);
                } else {
                    still.push(probe);
                }
            }
            waiting = still;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

pub struct Freshness {
    pub rate: f64,
    pub achieved_rate: f64,
    pub pushed: usize,
    /// Seconds from the start of an accepted call to the first read of its dossier row (the one the API serves) showing its change.
    pub visible: Vec<f64>,
    /// Seconds of the ingest calls themselves.
    pub calls: Vec<f64>,
    /// Probes not visible after 30 s.
    pub lost: usize,
    pub refused: usize,
}

/// Pushes référent assignments at `rate` per second for `seconds`, through the gRPC batch API
/// the ingest figure measured: each authority's system keeps one `PublishBatch` stream open
/// and sends each fact as it happens; the hub answers each in order once the broker has it.
/// One push in `probe_every` is followed: the time from its sending to the first read of its
/// dossier row (in SQL, every 50 ms, see [`watch_probes`]) that shows the new référent.
pub async fn freshness(
    stack: &Stack,
    population: &Population,
    rate: f64,
    seconds: u64,
    probe_every: usize,
) -> anyhow::Result<Freshness> {
    use tokio::sync::mpsc;
    let persons = located_persons(stack, population, 4000).await?;
    if persons.len() < 100 {
        bail!("only {} persons located for the freshness probes", persons.len());
    }
    // Probed persons get no other push meanwhile, so a later push cannot hide a probe's.
    let (probed, background) = persons.split_at(persons.len() / 5);
    let channels = Channels::new(stack);
    let (probes_tx, probes_rx) = mpsc::unbounded_channel::<Probe>();
    let watcher = tokio::spawn(watch_probes(stack.owner_pool().await?, probes_rx));
    let structure = crate::population::siret(2_000_000_000_000);
    let total = (rate * seconds as f64) as usize;
    let run = Uuid::new_v4().simple().to_string();
    // One open stream per authority: events in, replies out (in order).
    type Waiting = (Instant, Option<(Uuid, String, String)>);
    let mut streams: HashMap<String, (mpsc::UnboundedSender<OrientationEvent>, mpsc::UnboundedSender<Waiting>)> =
        HashMap::new();
    let mut readers = tokio::task::JoinSet::new();
    let mut authorities: Vec<String> = persons.iter().map(|p| p.authority.clone()).collect();
    authorities.sort();
    authorities.dedup();
    for authority in authorities {
        let channel = channels.of(&departement_institution(&authority)).await?;
        let (events, events_rx) = mpsc::unbounded_channel::<OrientationEvent>();
        let (waiting, mut waiting_rx) = mpsc::unbounded_channel::<Waiting>();
        let mut replies = OrientationIngestClient::new(channel)
            .publish_batch(tokio_stream::wrappers::UnboundedReceiverStream::new(events_rx))
            .await?
            .into_inner();
        let probes_tx = probes_tx.clone();
        readers.spawn(async move {
            let mut probes = Vec::new();
            let mut samples = Vec::new();
            while let Some(reply) = replies.message().await? {
                let Some((sent, probe)) = waiting_rx.recv().await else { break };
                if reply.status != passerelle_ingest::proto::batch_reply::Status::Accepted as i32 {
                    samples.push(Sample::Refused);
                    continue;
                }
                let call = sent.elapsed().as_secs_f64();
                let Some((person, _authority, uid)) = probe else {
                    samples.push(Sample::Call(call));
                    continue;
                };
                let (seen, answer) = tokio::sync::oneshot::channel();
                probes_tx.send(Probe { person, uid, sent, call, seen })?;
                probes.push(answer);
            }
            drop(probes_tx);
            for answer in probes {
                samples.push(answer.await.unwrap_or(Sample::Lost));
            }
            anyhow::Ok(samples)
        });
        streams.insert(authority, (events, waiting));
    }
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for index in 0..total {
        ticker.tick().await;
        let probe = index % probe_every == 0;
        let located =
            if probe { &probed[(index / probe_every) % probed.len()] } else { &background[index % background.len()] };
        let uid = format!("fresh-{}-{index}", &run[..8]);
        let event = OrientationEvent {
            event_id: format!("fresh-{run}-{index}"),
            occurred_at: chrono::Utc::now().to_rfc3339(),
            person: Some(Person { nir: located.nir.clone(), ..Person::default() }),
            location: Some(Location { receiving_authority: located.authority.clone(), commune: String::new() }),
            corrects_event_id: String::new(),
            fact: Some(proto::orientation_event::Fact::ReferentAssigned(proto::ReferentAssigned {
                referent: Some(proto::Agent {
                    uid: uid.clone(),
                    email: format!("{uid}@structure.example"),
                    siret: structure.clone(),
                }),
            })),
        };
        let (events, waiting) = &streams[&located.authority];
        waiting.send((Instant::now(), probe.then(|| (located.person, located.authority.clone(), uid))))?;
        events.send(event)?;
    }
    let pushing = started.elapsed().as_secs_f64();
    drop(streams);
    drop(probes_tx);
    let mut figures = Freshness {
        rate,
        achieved_rate: total as f64 / pushing,
        pushed: total,
        visible: Vec::new(),
        calls: Vec::new(),
        lost: 0,
        refused: 0,
    };
    while let Some(done) = readers.join_next().await {
        for sample in done?? {
            match sample {
                Sample::Refused => figures.refused += 1,
                Sample::Call(call) => figures.calls.push(call),
                Sample::Visible(call, visible) => {
                    figures.calls.push(call);
                    figures.visible.push(visible);
                }
                Sample::Lost => figures.lost += 1,
            }
        }
    }
    watcher.await??;
    figures.visible.sort_by(f64::total_cmp);
    figures.calls.sort_by(f64::total_cmp);
    Ok(figures)
}

enum Sample {
    Refused,
    Call(f64),
    Visible(f64, f64),
    Lost,
}

/// Rebuilds the dossier projection from the log (`passerelle projections rebuild dossier`,
/// under the running hub, as an operator would).
pub async fn rebuild(stack: &Stack) -> anyhow::Result<Duration> {
    let started = Instant::now();
    stack.run(&["projections", "rebuild", "dossier"], "rebuild.log")?;
    Ok(started.elapsed())
}

pub struct Seeded {
    pub persons: i64,
    pub events: i64,
    pub took: Duration,
}

/// Grows the read models to `target` persons by copying the projected persons (their events,
/// links and dossiers, sealed data included) under new ids, in SQL (`INSERT … SELECT`): the
/// figure measures reads at that size, not how it was reached.
pub async fn seed(stack: &Stack, target: i64) -> anyhow::Result<Seeded> {
    let pool = stack.owner_pool().await?;
    let mut connection = pool.acquire().await?;
    let started = Instant::now();
    let originals = count(&pool, "SELECT count(*) FROM readmodel.persons").await?;
    if originals == 0 {
        bail!("nothing projected to copy");
    }
    let copies = ((target - originals).max(0) + originals - 1) / originals;
    for table in ["persons", "subject_links", "person_events", "dossiers"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TEMP TABLE original_{table} AS SELECT * FROM readmodel.{table}"
        )))
        .execute(&mut *connection)
        .await?;
    }
    let mut select_lists = HashMap::new();
    for table in ["persons", "subject_links", "person_events", "dossiers"] {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'readmodel' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *connection)
        .await?;
        let clone_id = |c: &str| format!("CASE WHEN {c} IS NULL THEN NULL ELSE md5({c}::text || '#' || $1)::uuid END");
        let suffixed = |c: &str| format!("CASE WHEN {c} IS NULL THEN NULL ELSE {c} || '#c' || $1 END");
        let select: Vec<String> = columns
            .iter()
            .map(|column| match column.as_str() {
                "person_id" | "merged_into" => clone_id(column),
                "id_key" | "subject_key" | "household_key" | "source" => suffixed(column),
                other => other.to_owned(),
            })
            .collect();
        select_lists.insert(table, (columns.join(", "), select.join(", ")));
    }
    for copy in 1..=copies {
        for table in ["persons", "subject_links", "person_events", "dossiers"] {
            let (columns, select) = &select_lists[table];
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO readmodel.{table} ({columns}) SELECT {select} FROM original_{table}"
            )))
            .bind(copy.to_string())
            .execute(&mut *connection)
            .await
            .with_context(|| format!("copying {table}"))?;
        }
        if copy % 5 == 0 || copy == copies {
            eprintln!(
                "  api: seeded {} persons ({copy}/{copies} copies, {:.0} s)",
                originals * (copy + 1),
                started.elapsed().as_secs_f64()
            );
        }
    }
    sqlx::query("ANALYZE").execute(&mut *connection).await?;
    Ok(Seeded {
        persons: count(&pool, "SELECT count(*) FROM readmodel.persons").await?,
        events: count(&pool, "SELECT count(*) FROM readmodel.person_events").await?,
        took: started.elapsed(),
    })
}

pub struct Reads {
    pub latencies_ms: Vec<f64>,
    pub statuses: HashMap<u16, u64>,
    pub took: Duration,
    pub journal_rows: i64,
    pub concurrency: usize,
}

/// Dossier reads by the chargés d'orientation of the persons' authorities, `concurrency` at a
/// time for `seconds`, each journaled by the hub.
pub async fn reads(stack: &Stack, concurrency: usize, seconds: u64) -> anyhow::Result<Reads> {
    let pool = stack.owner_pool().await?;
    let sample: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT person_id, territory FROM readmodel.dossiers TABLESAMPLE SYSTEM (10) WHERE territory IS NOT NULL LIMIT 100000",
    )
    .fetch_all(&pool)
    .await?;
    if sample.is_empty() {
        bail!("no dossiers to read");
    }
    let tokens = Arc::new(tokens(stack)?);
    let journal_before = count(&pool, "SELECT count(*) FROM journal.entries").await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let sample = Arc::new(sample);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, sample, next, tokens) = (client.clone(), sample.clone(), next.clone(), tokens.clone());
        let http = stack.http.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut statuses: HashMap<u16, u64> = HashMap::new();
            while Instant::now() < deadline {
                let (person, territory) = &sample[next.fetch_add(1, Ordering::Relaxed) % sample.len()];
                let token = tokens.get(territory).cloned().unwrap_or_default();
                let sent = Instant::now();
                let response = client
                    .get(format!("{http}/api/v1/dossiers/{person}"))
                    .bearer_auth(&token)
                    .header("X-Motif-Acces", "orientation")
                    .send()
                    .await?;
                let status = response.status().as_u16();
                response.bytes().await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                *statuses.entry(status).or_default() += 1;
            }
            anyhow::Ok((latencies, statuses))
        });
    }
    let mut latencies = Vec::new();
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    while let Some(done) = workers.join_next().await {
        let (l, s) = done??;
        latencies.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    let took = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    let journal_rows = count(&pool, "SELECT count(*) FROM journal.entries").await? - journal_before;
    Ok(Reads { latencies_ms: latencies, statuses, took, journal_rows, concurrency })
}

/// A console session of `uid`, signed in through the development identity provider by the
/// same flow as a browser (sign-in page, CSRF token, authorization, callback): the session
/// cookie to send.
async fn console_session(client: &reqwest::Client, http: &str, uid: &str) -> anyhow::Result<String> {
    fn cookie(response: &reqwest::Response) -> Option<String> {
        response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find(|value| value.starts_with("passerelle_console="))
            .and_then(|value| value.split(';').next())
            .map(str::to_owned)
    }
    fn location(response: &reqwest::Response) -> anyhow::Result<String> {
        let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
        location.map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no redirect (status {})", response.status()))
    }
    let page = client.get(format!("{http}/console/connexion")).send().await?;
    let mut session = cookie(&page).ok_or_else(|| anyhow::anyhow!("the sign-in page set no session cookie"))?;
    let html = page.text().await?;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no CSRF token on the sign-in page"))?
        .to_owned();
    let started = client
        .post(format!("{http}/console/connexion"))
        .header(reqwest::header::COOKIE, &session)
        .form(&[("csrf", csrf)])
        .send()
        .await?;
    let authorize = reqwest::Url::parse(&location(&started)?)?;
    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("agent".into(), format!("|{uid}")));
    let chosen = client.post(format!("{http}/dev-oidc/authorize")).form(&form).send().await?;
    let callback = location(&chosen)?;
    let signed = client.get(callback).header(reqwest::header::COOKIE, &session).send().await?;
    if let Some(renewed) = cookie(&signed) {
        session = renewed;
    }
    anyhow::ensure!(location(&signed)? == "/console", "the sign-in of {uid} did not complete");
    Ok(session)
}

/// Reads the console's dossier page of sampled persons back to back with one client, each as
/// the orientation agent of the person's territory signed in to the console: the page's time
/// on loopback (policy, journal, identity opening, template), the figure of issue 12.
pub async fn console_reads(stack: &Stack, seconds: u64) -> anyhow::Result<Reads> {
    let pool = stack.owner_pool().await?;
    let sample: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT person_id, territory FROM readmodel.dossiers TABLESAMPLE SYSTEM (10) WHERE territory IS NOT NULL LIMIT 100000",
    )
    .fetch_all(&pool)
    .await?;
    if sample.is_empty() {
        bail!("no dossiers to read");
    }
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let mut sessions: HashMap<String, String> = HashMap::new();
    for (_, territory) in &sample {
        if !sessions.contains_key(territory) {
            let session = console_session(&client, &stack.http, &orientation_agent(territory)).await?;
            sessions.insert(territory.clone(), session);
        }
    }
    let journal_before = count(&pool, "SELECT count(*) FROM journal.entries").await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    let mut next = 0;
    while Instant::now() < deadline {
        let (person, territory) = &sample[next % sample.len()];
        next += 1;
        let sent = Instant::now();
        let response = client
            .get(format!("{}/console/dossiers/{person}?motif=orientation", stack.http))
            .header(reqwest::header::COOKIE, sessions.get(territory).map(String::as_str).unwrap_or_default())
            .send()
            .await?;
        let status = response.status().as_u16();
        response.bytes().await?;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        *statuses.entry(status).or_default() += 1;
    }
    let took = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    let journal_rows = count(&pool, "SELECT count(*) FROM journal.entries").await? - journal_before;
    Ok(Reads { latencies_ms: latencies, statuses, took, journal_rows, concurrency: 1 })
}

pub struct ApplyOnly {
    pub records: usize,
    /// Reading every record of the topics with a plain librdkafka consumer (the broker's cost).
    pub fetch: Duration,
    /// Applying them, in batches of `batch`, into empty read-model tables (PostgreSQL and the
    /// projector's own work, no broker).
    pub apply: Duration,
    pub batch: usize,
    /// How the batches folded the dossiers and households (the incremental fold's fallback rate).
    pub folds: passerelle_projector::refold::Folds,
}

/// Separates the projection's two costs: the records are fetched from the broker into memory
/// (timed: the broker baseline), then applied by the projection's own code into a fresh schema
/// (timed: the projector and PostgreSQL without the broker).
pub async fn apply_only(stack: &Stack, batch: usize) -> anyhow::Result<ApplyOnly> {
    use passerelle_eventlog::{registry::Registry, schemas::Topics};
    use rdkafka::{
        ClientConfig, Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };
    let config = &stack.config;
    let topics = Topics::new(config.kafka.topic_prefix.clone());
    let names = passerelle::projected_topics(&topics);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("group.id", "passerelle-bench-fetch")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    for topic in metadata.topics().iter().filter(|t| names.iter().any(|n| n == t.name())) {
        for partition in topic.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(10))?;
            remaining += high - low;
            assignment.add_partition_offset(topic.name(), partition.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut records = Vec::with_capacity(remaining.max(0) as usize);
    while (records.len() as i64) < remaining {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(message)) => records.push(passerelle_projector::apply::Record::from_message(&message)),
            Some(Err(error)) => bail!("fetching the topics: {error}"),
            None => bail!("no record for 10 s with {} of {remaining} read", records.len()),
        }
    }
    let fetch = started.elapsed();
    drop(consumer);
    let admin = stack.owner_pool().await?;
    passerelle_projector::rebuild::prepare(&admin).await?;
    let pool =
        passerelle::connect_with_search_path(&stack.owner_url, passerelle_projector::rebuild::REBUILD_SCHEMA).await?;
    let live = passerelle::connect(config).await?;
    let registry = Registry::new(live.clone(), topics.clone());
    let applier = passerelle::dossier_applier(registry, passerelle::key_store(config, &live).await?, &topics);
    let started = Instant::now();
    let mut folds = passerelle_projector::refold::Folds::default();
    for chunk in records.chunks(batch) {
        let outcome = applier.apply(&pool, chunk).await?;
        folds.dossiers_on += outcome.folds.dossiers_on;
        folds.dossiers_full += outcome.folds.dossiers_full;
        folds.households_on += outcome.folds.households_on;
        folds.households_full += outcome.folds.households_full;
    }
    let apply = started.elapsed();
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", passerelle_projector::rebuild::REBUILD_SCHEMA)))
        .execute(&admin)
        .await?;
    Ok(ApplyOnly { records: records.len(), fetch, apply, batch, folds })
}
