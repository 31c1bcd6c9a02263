//! `ticket-ledger verify`: the stream folded afresh, from its first sequence, and compared
//! record by record with a live daemon's export, without pausing it.
//!
//! Memory stays bounded whatever the stream's length: the export goes to a file as it arrives,
//! the stream is folded into a scratch store on disk (the daemon's own reader and fold, in one
//! uninterrupted pass, so what crashes, restarts and redeliveries did to the live store shows),
//! and both are then walked side by side in key order. Only records that moved while the export
//! was read are held, with their own events.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use async_nats::jetstream;
use futures::StreamExt;

use super::audit::AdminClient;
use crate::config::Settings;
use crate::core::batch::{MemoryProjection, RawMessage, TicketKey};
use crate::core::events;
use crate::core::fold::Ticket;
use crate::store::{Projection, ticket_json};

/// The outcome of `verify`.
#[derive(Debug)]
pub struct VerifyReport {
    /// Tickets compared.
    pub tickets: usize,
    /// The live applied sequence the comparison is anchored at.
    pub through_seq: u64,
    /// Of them, records that moved while the export was read, compared with the fold of their
    /// own events.
    pub moved: usize,
    /// Human-readable differences; empty when identical.
    pub differences: Vec<String>,
}

/// What the first read of the export learnt: where it is anchored, how far the stream must be
/// read, and the records that moved past the anchor while it was read.
pub(super) struct Export {
    pub(super) file: PathBuf,
    pub(super) anchor: u64,
    pub(super) upto: u64,
    pub(super) records: usize,
    pub(super) moved: HashMap<TicketKey, u64>,
}

/// Folds the stream from the start and compares it with the live records, using `scratch` (a
/// directory; the system's temporary one by default) for the export and the scratch store.
///
/// The live records are read while ingestion goes on, so the export is anchored at the applied
/// sequence S read before the scan. A record whose history ends at or before S is its state at S
/// and is compared with the fold through S. A record that changed during the scan (its history
/// goes past S) is compared with the fold of its own events through its last sequence, which is
/// what it must be, since every event for a ticket appends to its history.
pub async fn verify(
    settings: &Settings,
    c: &AdminClient,
    scratch: Option<&Path>,
) -> anyhow::Result<VerifyReport> {
    let dir = scratch_dir(scratch, "verify")?;
    let export = download(c, &dir.path().join("records.jsonl")).await?;
    let (client, stream) = the_stream(settings).await?;
    check_stream(&stream, export.upto).await?;

    let policy = crate::app::flush_policy(&settings.store);
    let path = dir.path().join("fold");
    let fold = tokio::task::spawn_blocking(move || Projection::open(&path, policy)).await??;
    let fold = Arc::new(fold);
    super::refold::fold_stream(&client, &stream, settings, &fold, export.anchor, "verify").await?;
    let f = fold.clone();
    tokio::task::spawn_blocking(move || f.persist()).await??;
    let moved = refold_moved(settings, &client, &stream, &export.moved).await?;
    let export_file = export.file.clone();
    let differences =
        tokio::task::spawn_blocking(move || compare(&export_file, &fold, &moved)).await??;
    Ok(VerifyReport {
        tickets: export.records,
        through_seq: export.anchor,
        moved: export.moved.len(),
        differences,
    })
}

/// A directory of its own for `command`'s exports and folds, under `scratch` (the system's
/// temporary directory by default), removed when dropped.
pub(super) fn scratch_dir(
    scratch: Option<&Path>,
    command: &str,
) -> anyhow::Result<tempfile::TempDir> {
    match scratch {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .with_context(|| format!("a scratch directory for {command}"))
}

/// A connection to the broker, and the event stream.
pub(super) async fn the_stream(
    settings: &Settings,
) -> anyhow::Result<(async_nats::Client, jetstream::stream::Stream)> {
    let client = crate::nats::client_options(&settings.nats)
        .await?
        .connect(crate::nats::server_addrs(&settings.nats.url)?)
        .await
        .with_context(|| format!("connecting to {}", settings.nats.url))?;
    let js = jetstream::new(client.clone());
    let stream = crate::nats::ensure_stream(&js, &settings.nats).await?;
    Ok((client, stream))
}

/// Writes the daemon's export into `file` as it arrives, then reads it once for its anchor,
/// the last sequence any record reached, and the records that moved past the anchor.
pub(super) async fn download(c: &AdminClient, file: &Path) -> anyhow::Result<Export> {
    let mut resp = c.get_raw("/v1/ledger/records").await?;
    let mut out = BufWriter::new(std::fs::File::create(file)?);
    while let Some(piece) = resp.chunk().await.context("reading the export")? {
        out.write_all(&piece)?;
    }
    out.flush()?;
    drop(out);
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(std::fs::File::open(&file)?).lines();
        let head: serde_json::Value =
            serde_json::from_str(&lines.next().context("an empty export")??)?;
        let anchor = head["applied_seq"].as_u64().context("no applied_seq")?;
        let (mut upto, mut records, mut moved) = (anchor, 0, HashMap::new());
        for line in lines {
            let t: Ticket = serde_json::from_str(&line?).context("a record of the export")?;
            let last = t.last_seq();
            upto = upto.max(last);
            records += 1;
            if last > anchor {
                moved.insert((t.project, t.order_id), last);
            }
        }
        Ok(Export {
            file,
            anchor,
            upto,
            records,
            moved,
        })
    })
    .await?
}

/// Warns when retention dropped the stream's start; fails when the stream ends before the live
/// records do.
async fn check_stream(stream: &jetstream::stream::Stream, upto: u64) -> anyhow::Result<()> {
    let state = stream.clone().get_info().await?.state;
    if state.first_sequence > 1 && state.messages > 0 {
        eprintln!(
            "warning: the stream starts at sequence {}: retention dropped the events before it, \
             so the records of tickets they touched will differ",
            state.first_sequence
        );
    }
    if upto > 0 && state.last_sequence < upto {
        bail!(
            "the stream ends at {} but the projection is at {upto}",
            state.last_sequence
        );
    }
    Ok(())
}

/// The records that moved during the export, each folded from its own events through the last
/// sequence its record shows. Reads the stream a second time, keeping only those events.
async fn refold_moved(
    settings: &Settings,
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    moved: &HashMap<TicketKey, u64>,
) -> anyhow::Result<BTreeMap<TicketKey, Option<Ticket>>> {
    let own = own_events(settings, client, stream, moved).await?;
    let rules = crate::config::decode_rules(&settings.nats, &settings.ingest);
    Ok(moved
        .keys()
        .map(|key| (key.clone(), fold_own(&own, key, u64::MAX, &rules)))
        .collect())
}

/// The events of the tickets of `through`, each through the sequence given with it, read from
/// the stream's start.
pub(super) async fn own_events(
    settings: &Settings,
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    through: &HashMap<TicketKey, u64>,
) -> anyhow::Result<HashMap<TicketKey, Vec<RawMessage>>> {
    let mut own: HashMap<TicketKey, Vec<RawMessage>> = HashMap::new();
    let Some(&upto) = through.values().max() else {
        return Ok(own);
    };
    let rules = crate::config::decode_rules(&settings.nats, &settings.ingest);
    let mut messages = crate::nats::ordered_messages(client, stream, 1).await?;
    while let Some(m) = messages.next().await {
        let m = crate::nats::raw_message(&m?)?;
        let seq = m.seq;
        let decoded = events::decode(
            &m.subject_text(),
            &m.payload,
            &rules.subject_prefix,
            rules.max_event_bytes,
        );
        if let Ok(e) = decoded
            && let Some((key, &last)) = through.get_key_value(&(e.project, e.order_id))
            && seq <= last
        {
            own.entry(key.clone()).or_default().push(m);
        }
        if seq >= upto {
            break;
        }
    }
    Ok(own)
}

/// The ticket `key` folded from its own events (of [`own_events`]) through sequence `through`.
pub(super) fn fold_own(
    own: &HashMap<TicketKey, Vec<RawMessage>>,
    key: &TicketKey,
    through: u64,
    rules: &crate::core::batch::DecodeRules,
) -> Option<Ticket> {
    let events = own.get(key).map_or(&[][..], |v| v);
    let end = events.partition_point(|m| m.seq <= through);
    let mut p = MemoryProjection::default();
    p.fold(&events[..end], rules);
    p.tickets.remove(key)
}

/// Walks the export and the scratch fold side by side in key order (both are a store's key
/// order), comparing each record's JSON.
fn compare(
    export: &Path,
    fold: &Projection,
    moved: &BTreeMap<TicketKey, Option<Ticket>>,
) -> anyhow::Result<Vec<String>> {
    let mut differences = Vec::new();
    // Each export line with its key, read once.
    let mut live = BufReader::new(std::fs::File::open(export)?)
        .lines()
        .skip(1)
        .map(|line| -> anyhow::Result<(TicketKey, String)> {
            let line = line?;
            Ok((key_of(&line)?, line))
        })
        .peekable();
    let mut folded = fold.store().tickets().peekable();
    let mut meter = super::progress::Meter::new("compare", "records");
    let mut done = 0;
    loop {
        let order = match (live.peek(), folded.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => return Err(live.next().expect("peeked").expect_err("err")),
            (_, Some(Err(_))) => {
                return Err(folded.next().expect("peeked").expect_err("err").into());
            }
            (Some(Ok(_)), None) => Ordering::Less,
            (None, Some(Ok(_))) => Ordering::Greater,
            (Some(Ok((key, _))), Some(Ok(t))) => (&key.0, key.1).cmp(&(&t.project, t.order_id)),
        };
        let expected = match order {
            Ordering::Less => None,
            Ordering::Equal => folded.next().and_then(Result::ok),
            Ordering::Greater => {
                let t = folded.next().and_then(Result::ok).expect("peeked");
                if !moved.contains_key(&(t.project.clone(), t.order_id)) {
                    differences.push(format!(
                        "{}/{}: in the stream's fold but not in the live store",
                        t.project, t.order_id
                    ));
                }
                continue;
            }
        };
        let (key, raw) = live.next().expect("peeked")?;
        let want = match moved.get(&key) {
            Some(own) => own.as_ref(),
            None => expected.as_ref(),
        };
        differences.extend(difference(&key, raw.as_bytes(), want));
        done += 1;
        meter.show(done, done, "compared");
    }
    meter.finish(true);
    Ok(differences)
}

/// The key of an export line (its project and order_id).
pub(super) fn key_of(line: &str) -> anyhow::Result<TicketKey> {
    #[derive(serde::Deserialize)]
    struct Key {
        project: crate::core::domain::ProjectId,
        order_id: u64,
    }
    let k: Key = serde_json::from_str(line).context("a record of the export")?;
    Ok((k.project, k.order_id))
}

/// How a live record differs from what the stream says it must be, if it does.
pub(super) fn difference(key: &TicketKey, raw: &[u8], expected: Option<&Ticket>) -> Option<String> {
    match expected {
        None => Some(format!(
            "{}/{}: in the live store but not in the stream's fold",
            key.0, key.1
        )),
        Some(e) => {
            let want = ticket_json(e);
            (want != raw).then(|| {
                format!(
                    "{}/{}:\n  live:   {}\n  stream: {}",
                    key.0,
                    key.1,
                    String::from_utf8_lossy(raw),
                    String::from_utf8_lossy(&want)
                )
            })
        }
    }
}
