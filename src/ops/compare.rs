//! `ticket-ledger compare URL_A URL_B`: two live replicas checked against each other, record by
//! record, without pausing either.
//!
//! Both exports are read while the replicas keep ingesting, so each is anchored at its own
//! applied sequence, and a ticket touched between the two anchors legitimately differs. The
//! records that agree byte for byte are counted alike. Each one that differs (or is held by one
//! replica only) is checked against the stream: on each side it must be the fold of the
//! ticket's own events through that side's position for it (its anchor, or the record's last
//! sequence if it moved past the anchor during the export). A difference that is not explained
//! that way is reported. Memory: the exports go to files, and only the differing tickets'
//! events are held.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::audit::AdminClient;
use super::verify::{
    Export, difference, download, fold_own, key_of, own_events, scratch_dir, the_stream,
};
use crate::config::Settings;
use crate::core::batch::TicketKey;
use crate::core::fold::Ticket;

/// The outcome of `compare`.
#[derive(Debug)]
pub struct CompareReport {
    /// Records held by either replica.
    pub tickets: usize,
    /// Each replica's anchor (its applied sequence when its export began).
    pub anchors: (u64, u64),
    /// Records that differ only by the replicas' positions, each checked against the stream.
    pub explained: usize,
    /// Differences the positions do not explain; empty when the replicas agree.
    pub differences: Vec<String>,
}

/// One side of a ticket that differs: its export line, if the replica holds it.
type Side = Option<String>;

/// A ticket the two replicas do not hold alike, with each side's line.
type Differing = (TicketKey, Side, Side);

/// Compares the replicas `a` and `b` (see the module's documentation), using `scratch` (a
/// directory; the system's temporary one by default) for the exports.
pub async fn compare(
    settings: &Settings,
    (a, b): (&AdminClient, &AdminClient),
    scratch: Option<&Path>,
) -> anyhow::Result<CompareReport> {
    let dir = scratch_dir(scratch, "compare")?;
    let (fa, fb) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let (ea, eb) = tokio::try_join!(download(a, &fa), download(b, &fb))?;
    let (tickets, differing) = {
        let (fa, fb) = (ea.file.clone(), eb.file.clone());
        tokio::task::spawn_blocking(move || walk(&fa, &fb)).await??
    };
    // Where each differing ticket must be checked on each side, and the events that needs.
    let through = |e: &Export, side: &Side| -> anyhow::Result<u64> {
        let last = match side {
            Some(line) => serde_json::from_str::<Ticket>(line)?.last_seq(),
            None => 0,
        };
        Ok(e.anchor.max(last))
    };
    let mut upto: HashMap<TicketKey, u64> = HashMap::new();
    let mut checks = Vec::with_capacity(differing.len());
    for (key, sa, sb) in differing {
        let (ta, tb) = (through(&ea, &sa)?, through(&eb, &sb)?);
        upto.insert(key.clone(), ta.max(tb));
        checks.push((key, [(sa, ta), (sb, tb)]));
    }
    let own = if upto.is_empty() {
        HashMap::new()
    } else {
        let (client, stream) = the_stream(settings).await?;
        own_events(settings, &client, &stream, &upto).await?
    };
    let rules = crate::config::decode_rules(&settings.nats, &settings.ingest);
    let (mut differences, mut unexplained) = (Vec::new(), 0);
    let names = [a.base(), b.base()];
    for (key, sides) in &checks {
        let before = differences.len();
        for ((side, through), name) in sides.iter().zip(names) {
            let expected = fold_own(&own, key, *through, &rules);
            let found = match side {
                Some(line) => difference(key, line.as_bytes(), expected.as_ref()),
                None => expected
                    .map(|_| format!("{}/{}: not held, but the stream has it", key.0, key.1)),
            };
            if let Some(d) = found {
                differences.push(format!("{name}: {d} (through sequence {through})"));
            }
        }
        unexplained += usize::from(differences.len() > before);
    }
    Ok(CompareReport {
        tickets,
        anchors: (ea.anchor, eb.anchor),
        explained: checks.len() - unexplained,
        differences,
    })
}

/// Walks both exports side by side in key order: how many tickets either holds, and those the
/// two do not hold alike, with each side's line.
fn walk(a: &Path, b: &Path) -> anyhow::Result<(usize, Vec<Differing>)> {
    let lines = |file: &Path| -> anyhow::Result<_> {
        Ok(BufReader::new(std::fs::File::open(file)?)
            .lines()
            .skip(1)
            .map(|line| -> anyhow::Result<(TicketKey, String)> {
                let line = line?;
                Ok((key_of(&line)?, line))
            })
            .peekable())
    };
    let (mut la, mut lb) = (lines(a)?, lines(b)?);
    let (mut tickets, mut differing) = (0, Vec::new());
    let mut meter = super::progress::Meter::new("compare", "records");
    loop {
        let next = |l: &mut std::iter::Peekable<_>| -> anyhow::Result<Option<(TicketKey, String)>> {
            l.next().transpose()
        };
        let order = match (la.peek(), lb.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => return Err(next(&mut la).expect_err("peeked an error")),
            (_, Some(Err(_))) => return Err(next(&mut lb).expect_err("peeked an error")),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(Ok((ka, _))), Some(Ok((kb, _)))) => (&ka.0, ka.1).cmp(&(&kb.0, kb.1)),
        };
        tickets += 1;
        match order {
            Ordering::Less => {
                let (k, line) = next(&mut la)?.expect("peeked");
                differing.push((k, Some(line), None));
            }
            Ordering::Greater => {
                let (k, line) = next(&mut lb)?.expect("peeked");
                differing.push((k, None, Some(line)));
            }
            Ordering::Equal => {
                let (k, x) = next(&mut la)?.expect("peeked");
                let (_, y) = next(&mut lb)?.expect("peeked");
                if x != y {
                    differing.push((k, Some(x), Some(y)));
                }
            }
        }
        meter.show(tickets as u64, tickets as u64, "compared");
    }
    meter.finish(true);
    Ok((tickets, differing))
}
