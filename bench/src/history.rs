//! The benchmark's history: N tickets over 10 projects, 200 creators, names from about 2,000
//! words, 2–5 events each, interleaved as an executor running many tickets at once would emit
//! them, the same every run (a fixed seed). By default a tenth of the tickets (those with
//! `(order_id / 10) % 10 == 0`, so every project has some; [`PLANS_EVERY`]) carry a plan of 2–5
//! batches of 10–50 hosts, and their executor reports each host: `batch_started` per batch, then
//! `instance_started` and `instance_finished` (one in twenty `instance_abnormal`) per host. With
//! plans every 0, no ticket has one: 3.1 events a ticket, the shape of issue 19's curve.

use ticket_ledger::core::domain::ProjectId;
use ticket_ledger::core::events::{CreatedData, Detail, Event, InstanceEvent, Kind};
use ticket_ledger::core::fold::{self, Ticket};
use ticket_ledger::core::job::{Batch, Instance, Plan, Rotation, Script, Target};

/// The default share of tickets with a plan: one run of ten `order_id`s in this many.
pub const PLANS_EVERY: u64 = 10;

/// Whether the ticket carries a plan with batches and hosts: one run of ten `order_id`s in
/// `every` (none when `every` is 0).
pub fn planned(order_id: u64, every: u64) -> bool {
    every != 0 && (order_id / 10).is_multiple_of(every)
}

/// The plan of a planned ticket: 2–5 batches of 10–50 hosts, ids `batch * 1000 + n`.
fn plan(rng: &mut Rng) -> Plan {
    let batches = (1..=2 + rng.below(4) as u32)
        .map(|b| {
            std::sync::Arc::new(Batch {
                batch_index: b,
                rotation_strategy: Rotation::Continue,
                properties: None,
                instances: (0..10 + rng.below(41))
                    .map(|n| {
                        Instance::planned(Target {
                            instance_id: u64::from(b) * 1000 + n,
                            resource_id: Some(format!("ecs-{b}-{n}")),
                            region_id: Some("cn-north-4".into()),
                            ..Default::default()
                        })
                    })
                    .collect(),
            })
        })
        .collect();
    Plan {
        script: Script {
            script_name: Some("bench-script".into()),
            script_version_uuid: Some(1),
            ..Default::default()
        },
        batches,
    }
}

/// A small deterministic PRNG (SplitMix64): the same history every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "va", "ze", "bo", "de", "fi", "gu", "ha", "jo",
    "ke", "li", "mo", "ne", "po", "ru", "sa", "ti",
];

/// About 2,000 distinct words.
fn word(rng: &mut Rng) -> String {
    let n = rng.below(2_000);
    let a = SYLLABLES[(n % 24) as usize];
    let b = SYLLABLES[((n / 24) % 24) as usize];
    let c = SYLLABLES[((n / 576) % 24) as usize];
    format!("{a}{b}{c}")
}

/// The events of one ticket, in order.
fn ticket_events(rng: &mut Rng, order_id: u64, t0: i64, plans_every: u64) -> Vec<Event> {
    let project = ProjectId::parse(&format!("project-{}", order_id % 10)).expect("valid");
    let ev = |kind, t: i64, n: u64| Event {
        id: format!("{order_id}-{n}").into(),
        source: "bench-executor".into(),
        kind,
        time_ms: t,
        project: project.clone(),
        order_id,
        created: None,
        detail: Default::default(),
    };
    let mut created = ev(Kind::Created, t0, 0);
    created.created = Some(CreatedData {
        execute_uuid: format!("SCT{order_id:012}").into(),
        order_name: format!("{}-{}-{}", word(rng), word(rng), rng.below(1000)).into(),
        creator: format!("creator-{}", rng.below(200)).into(),
        region_ids: "cn-north-4".into(),
        job_type: "SCRIPT".into(),
        plan: None,
    });
    let run = 1_000 + rng.below(600_000) as i64;
    let mut out = vec![created, ev(Kind::Started, t0 + 50, 1)];
    let mut last_host = t0;
    if planned(order_id, plans_every) {
        let p = plan(rng);
        // The hosts run between the start and the ticket's end.
        let mut n = 100;
        let mut t = t0 + 60;
        for b in &p.batches {
            let mut e = ev(Kind::BatchStarted, t, n);
            e.detail = Detail::Batch {
                batch_index: b.batch_index,
            };
            out.push(e);
            n += 1;
            for i in &b.instances {
                for kind in [
                    Kind::InstanceStarted,
                    if rng.below(20) == 0 {
                        Kind::InstanceAbnormal
                    } else {
                        Kind::InstanceFinished
                    },
                ] {
                    t += 1;
                    let mut e = ev(kind, t, n);
                    e.detail = Detail::Instance(InstanceEvent {
                        batch_index: b.batch_index,
                        instance_id: i.id(),
                        message: (kind != Kind::InstanceStarted).then(|| "exit 0".into()),
                    });
                    out.push(e);
                    n += 1;
                }
            }
        }
        out[0].created.as_mut().expect("created").plan = Some(Box::new(p));
        last_host = t;
    }
    let run = run.max(last_host - t0 + 1);
    match rng.below(10) {
        0..=5 => out.push(ev(Kind::Finished, t0 + run, 2)),
        6 => out.push(ev(Kind::Cancelled, t0 + run, 2)),
        7 => out.push(ev(Kind::Abnormal, t0 + run, 2)),
        8 => {
            out.push(ev(Kind::Paused, t0 + run / 3, 2));
            out.push(ev(Kind::Resumed, t0 + run / 2, 3));
            out.push(ev(Kind::Finished, t0 + run, 4));
        }
        _ => {} // still PROCESSING
    }
    out
}

/// The benchmark's history: `tickets` tickets, their events interleaved as an executor running
/// about a thousand tickets at once would emit them, the same every time (a fixed seed).
pub struct History {
    rng: Rng,
    tickets: u64,
    next: u64,
    live: Vec<(Vec<Event>, usize)>,
    plans_every: u64,
}

impl History {
    /// The history of `tickets` tickets.
    pub fn new(tickets: u64) -> Self {
        Self::of_tickets(1, tickets)
    }

    /// The history of tickets `first` to `last` (the soak's new tickets, after the store's).
    pub fn of_tickets(first: u64, last: u64) -> Self {
        History {
            rng: Rng(42 ^ first),
            tickets: last,
            next: first,
            live: Vec::new(),
            plans_every: PLANS_EVERY,
        }
    }

    /// The same history with plans on one run of ten tickets in `every` (none if 0).
    pub fn plans_every(self, every: u64) -> Self {
        History {
            plans_every: every,
            ..self
        }
    }
}

/// An event, and the final state of its ticket (without history) when it is the ticket's last.
pub type HistoryItem = (Event, Option<Ticket>);

impl Iterator for History {
    type Item = HistoryItem;

    fn next(&mut self) -> Option<HistoryItem> {
        const T_BASE: i64 = 1_700_000_000_000;
        while self.live.len() < 1_000 && self.next <= self.tickets {
            let t0 = T_BASE + self.next as i64 * 600;
            self.live.push((
                ticket_events(&mut self.rng, self.next, t0, self.plans_every),
                0,
            ));
            self.next += 1;
        }
        if self.live.is_empty() {
            return None;
        }
        let pick = self.rng.below(self.live.len() as u64) as usize;
        let (events, cursor) = &mut self.live[pick];
        let e = events[*cursor].clone();
        *cursor += 1;
        let mut last = None;
        if *cursor == events.len() {
            let mut t = None;
            for e in events.iter() {
                t = fold::apply(t, e, 0).ticket;
            }
            // The list's fields only: the PostgreSQL baseline is a list.
            last = t.map(|mut t| {
                t.history = Vec::new();
                t.plan = None;
                t
            });
            self.live.swap_remove(pick);
        }
        Some((e, last))
    }
}
