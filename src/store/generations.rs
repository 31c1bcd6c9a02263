//! Blue/green generations: the live projection, a rebuilt one filled beside it, and the
//! `CURRENT` file that says which is live.
//!
//! `store.path` holds generation directories (`gen-000001`, ...) and `CURRENT`, one line naming
//! the live one. A switch-over rewrites `CURRENT` atomically (write, fsync, rename, fsync the
//! directory), so a crash at any point leaves either the old or the new generation live.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::StoreError;
use super::projection::{FlushPolicy, Projection};
use crate::core::fold::Ticket;

/// Name of the file that says which generation directory is live.
const CURRENT: &str = "CURRENT";

/// The live projection, and the means to replace it by a rebuilt one (blue/green).
///
/// `store.path` holds generation directories (`gen-000001`, ...) and a `CURRENT` file naming the
/// live one. A rebuild fills a new generation beside the live one; [`Ledger::switch_to`] rewrites
/// `CURRENT` atomically (write + rename) and swaps the in-memory handle, so a crash at any point
/// leaves either the old or the new generation live, never a mix.
pub struct Ledger {
    root: PathBuf,
    current: RwLock<(u32, Arc<Projection>)>,
    commit_lock: Mutex<()>,
    policy: FlushPolicy,
}

fn gen_dir(root: &Path, generation: u32) -> PathBuf {
    root.join(gen_name(generation))
}

impl Ledger {
    /// Opens the live generation under `root`, and removes any other generation (an interrupted
    /// rebuild, or one retired by a switch-over whose removal was cut short).
    ///
    /// Only a `root` without `CURRENT` and without any generation is a fresh store. A `CURRENT`
    /// that cannot be read or names no generation, or a missing one beside generations, is
    /// refused ([`StoreError::Current`]) and nothing is deleted: guessing would risk the live data.
    pub fn open(root: &Path, policy: FlushPolicy) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(StoreError::Io)?;
        let generation = match live_generation(root)? {
            Some(g) => g,
            None => {
                write_current(root, 1)?;
                1
            }
        };
        for (g, dir) in generations(root)? {
            if g != generation {
                tracing::info!(dir = %dir.display(), "removing a generation that is not live");
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove it");
                }
            }
        }
        let projection = Projection::open(&gen_dir(root, generation), policy)?;
        Ok(Self {
            root: root.to_owned(),
            current: RwLock::new((generation, Arc::new(projection))),
            commit_lock: Mutex::new(()),
            policy,
        })
    }

    /// The live projection.
    pub fn current(&self) -> Arc<Projection> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Held by whoever commits to the live projection, so that a switch-over happens between
    /// two commits, never during one.
    pub fn commit_lock(&self) -> MutexGuard<'_, ()> {
        self.commit_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes everything the live projection shows to sled, between two commits: what readers
    /// of the store itself (exports, dead letters, shutdown) call first.
    pub fn persist(&self) -> Result<u64, StoreError> {
        let _commit = self.commit_lock();
        self.current().persist()
    }

    /// The directory that holds the generations.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens an empty generation beside the live one, for a rebuild.
    pub fn begin_rebuild(&self) -> Result<(u32, Projection), StoreError> {
        let next = self.current.read().unwrap_or_else(|e| e.into_inner()).0 + 1;
        let dir = gen_dir(&self.root, next);
        let _ = std::fs::remove_dir_all(&dir);
        let live_view = self.current().index.clone();
        Ok((
            next,
            Projection::open_rebuild(&dir, self.policy, live_view)?,
        ))
    }

    /// Makes a rebuilt generation live. The caller holds [`Ledger::commit_lock`] and has brought
    /// `next` to the live projection's applied sequence. The old generation's files are removed
    /// once the last reader lets go of it.
    ///
    /// The rebuilt generation shares the live query view. Before the switch, both generations'
    /// records are compared in key order and the view is patched wherever they differ, so the
    /// view then describes the rebuilt records exactly (usually nothing differs: the same stream
    /// folded by the same code).
    pub fn switch_to(&self, generation: u32, next: Arc<Projection>) -> Result<(), StoreError> {
        next.persist()?;
        let live = self.current();
        live.persist()?;
        // A generation from begin_rebuild shares the live view and has not kept it yet; any other
        // keeps its own view through its commits.
        if Arc::ptr_eq(&live.index, &next.index) && !next.maintains_view.load(Ordering::Acquire) {
            if live.view_kept() {
                let patched = patch_view(&live, &next)?;
                tracing::info!(patched, "rebuilt records compared with the live ones");
            } else {
                // The live view is behind its own records (catching up): nothing to patch from.
                live.replace_view(&next.store)?;
            }
            next.maintains_view.store(true, Ordering::Release);
        }
        write_current(&self.root, generation)?;
        let old = {
            let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *cur, (generation, next))
        };
        // The old generation's files go when its last reader lets go of it.
        old.1.retire(gen_dir(&self.root, old.0));
        Ok(())
    }
}

/// The prefix a generation set aside by [`keep_aside_and_make_live`] takes: no longer a
/// generation (so nothing removes it), still beside them for whoever wants to look.
const KEPT: &str = "kept-";

/// For `rebuild-store`, offline: an empty directory for a generation numbered after every one
/// under `root`, whatever state `CURRENT` and they are in. Refuses if a process (a running
/// daemon) holds any generation's lock.
pub fn fresh_generation(root: &Path) -> Result<(u32, PathBuf), StoreError> {
    std::fs::create_dir_all(root).map_err(StoreError::Io)?;
    let found = generations(root)?;
    for (_, dir) in &found {
        refuse_if_held(dir)?;
    }
    let next = found.last().map_or(1, |(g, _)| g + 1);
    let dir = gen_dir(root, next);
    std::fs::create_dir(&dir).map_err(StoreError::Io)?;
    Ok((next, dir))
}

/// sled holds an exclusive `flock` on its `db` file while open; taking it for a moment tells
/// whether anyone does.
fn refuse_if_held(dir: &Path) -> Result<(), StoreError> {
    let Ok(file) = std::fs::File::open(dir.join("db")) else {
        return Ok(());
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: dir.to_owned(),
            waited: std::time::Duration::ZERO,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io(e)),
    }
}

/// For `rebuild-store`, once `generation` holds the folded stream: renames every other
/// generation to `kept-gen-…` (never deleting one), then makes `generation` live. Returns the
/// directories kept. Renaming comes first, so that no start-up can take a kept generation
/// for a leftover and remove it; a crash in between leaves `CURRENT` naming a directory
/// that is gone, which start-up refuses, and a second `rebuild-store` finishes the job.
pub fn keep_aside_and_make_live(root: &Path, generation: u32) -> Result<Vec<PathBuf>, StoreError> {
    let mut kept = Vec::new();
    for (g, dir) in generations(root)? {
        if g == generation {
            continue;
        }
        let mut to = root.join(format!("{KEPT}{}", gen_name(g)));
        let mut n = 1;
        while to.exists() {
            to = root.join(format!("{KEPT}{}.{n}", gen_name(g)));
            n += 1;
        }
        std::fs::rename(&dir, &to).map_err(StoreError::Io)?;
        kept.push(to);
    }
    write_current(root, generation)?;
    Ok(kept)
}

fn write_current(root: &Path, generation: u32) -> Result<(), StoreError> {
    let tmp = root.join("CURRENT.tmp");
    let io = StoreError::Io;
    std::fs::write(&tmp, format!("{}\n", gen_name(generation))).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, root.join(CURRENT)).map_err(io)?;
    std::fs::File::open(root)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Patches the shared view from `live`'s records to `next`'s: a merge of both stores in key
/// order; a ticket that differs is upserted, one that is gone is removed. Returns how many.
fn patch_view(live: &Projection, next: &Projection) -> Result<usize, StoreError> {
    let mut changes: Vec<(Vec<u8>, Option<Ticket>)> = Vec::new();
    let mut old = live.store.raw_tickets().peekable();
    let mut new = next.store.raw_tickets().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => return Err(old.next().expect("peeked").expect_err("err")),
            (_, Some(Err(_))) => return Err(new.next().expect("peeked").expect_err("err")),
            (Some(Ok(_)), None) => std::cmp::Ordering::Less,
            (None, Some(Ok(_))) => std::cmp::Ordering::Greater,
            (Some(Ok((ko, _))), Some(Ok((kn, _)))) => ko.cmp(kn),
        };
        match order {
            std::cmp::Ordering::Less => {
                let (k, _) = old.next().expect("peeked")?;
                changes.push((k, None));
            }
            std::cmp::Ordering::Greater => {
                let (k, v) = new.next().expect("peeked")?;
                changes.push((k.clone(), Some(decode_record(&k, &v)?)));
            }
            std::cmp::Ordering::Equal => {
                let (_, vo) = old.next().expect("peeked")?;
                let (k, vn) = new.next().expect("peeked")?;
                if vo != vn {
                    changes.push((k.clone(), Some(decode_record(&k, &vn)?)));
                }
            }
        }
    }
    let n = changes.len();
    if n > 0 {
        let mut index = live.index.write().unwrap_or_else(|e| e.into_inner());
        for (k, t) in changes {
            match t {
                Some(t) => index.upsert(&t),
                None => {
                    if let Some((p, o)) = super::ticket_key_parts(&k) {
                        index.remove(&p, o);
                    }
                }
            }
        }
    }
    Ok(n)
}

fn decode_record(key: &[u8], v: &[u8]) -> Result<Ticket, StoreError> {
    crate::core::record::decode(v).map_err(|e| StoreError::Corrupt {
        key: hex::encode(key),
        reason: e.to_string(),
    })
}

/// The generation `CURRENT` names; `None` for a fresh store (no `CURRENT`, no generation).
fn live_generation(root: &Path) -> Result<Option<u32>, StoreError> {
    let path = root.join(CURRENT);
    let refuse = |problem: String| StoreError::Current {
        path: path.clone(),
        problem,
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let found = generations(root)?;
            if found.is_empty() {
                return Ok(None);
            }
            let names: Vec<String> = found.iter().map(|(g, _)| gen_name(*g)).collect();
            return Err(refuse(format!(
                "missing beside {}; write the live generation's name into it (for example \
                 `echo {} > {}`), or fold the stream into a new generation with \
                 `ticket-ledger rebuild-store`",
                names.join(", "),
                names[names.len() - 1],
                path.display()
            )));
        }
        Err(e) => return Err(refuse(format!("cannot be read ({e})"))),
    };
    let generation = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.trim().strip_prefix("gen-"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            refuse(format!(
                "does not name a generation (it holds {:?}; expected a line like `gen-000001`); \
                 write the live one's name into it, or run `ticket-ledger rebuild-store`",
                String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
            ))
        })?;
    if !gen_dir(root, generation).is_dir() {
        return Err(refuse(format!(
            "names {}, which does not exist under {}; `ticket-ledger rebuild-store` folds \
             the stream into a new generation",
            gen_name(generation),
            root.display()
        )));
    }
    Ok(Some(generation))
}

/// Every generation directory under `root`, by number.
fn generations(root: &Path) -> Result<Vec<(u32, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).map_err(StoreError::Io)? {
        let e = e.map_err(StoreError::Io)?;
        let name = e.file_name();
        if let Some(g) = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|n| n.parse::<u32>().ok())
            && e.path().is_dir()
        {
            out.push((g, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn gen_name(generation: u32) -> String {
    format!("gen-{generation:06}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::domain::{ProjectId, Status};
    use crate::store::projection::tests::{commit, ticket};
    use crate::view::Query;

    #[test]
    fn a_rebuild_shares_the_view_and_patches_what_differs_at_the_switch() {
        let root = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(root.path(), FlushPolicy::default()).unwrap();
        let live = ledger.current();
        commit(
            &live,
            vec![
                ticket(1, Status::Ready),
                ticket(2, Status::Ready),
                ticket(3, Status::Ready),
            ],
            3,
        );
        let (generation, next) = ledger.begin_rebuild().unwrap();
        // The rebuilt records differ: 1 is gone, 2 has another status, 4 is new.
        commit(
            &next,
            vec![
                ticket(2, Status::Finished),
                ticket(3, Status::Ready),
                ticket(4, Status::Ready),
            ],
            3,
        );
        let p = ProjectId::parse("p").unwrap();
        let live_ids: Vec<u64> = live
            .query(&p, &Query::all())
            .data
            .iter()
            .map(|r| r.order_id)
            .collect();
        assert_eq!(live_ids, [3, 2, 1], "the live view is untouched meanwhile");
        let _lock = ledger.commit_lock();
        ledger.switch_to(generation, Arc::new(next)).unwrap();
        let now = ledger.current();
        let ids =
            |q: &Query| -> Vec<u64> { now.query(&p, q).data.iter().map(|r| r.order_id).collect() };
        assert_eq!(ids(&Query::all()), [4, 3, 2]);
        let mut finished = Query::all();
        finished.status = Some(Status::Finished);
        assert_eq!(ids(&finished), [2]);
        assert_eq!(now.ticket_count(), 3);
        // Commits to the new generation now keep the view.
        commit(&now, vec![ticket(5, Status::Ready)], 4);
        assert_eq!(ids(&Query::all()), [5, 4, 3, 2]);
    }

    /// A store whose `CURRENT` is damaged, unreadable or missing beside its generations is
    /// refused with an error naming the file, and every generation is left where it was.
    #[test]
    fn a_damaged_or_missing_current_refuses_to_open_and_deletes_nothing() {
        let root = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open(root.path(), FlushPolicy::default()).unwrap();
            commit(&ledger.current(), vec![ticket(1, Status::Ready)], 1);
            ledger.persist().unwrap();
        }
        let current = root.path().join(CURRENT);
        let gen1 = root.path().join("gen-000001");
        let cases: [(&str, &[u8]); 4] = [
            ("not UTF-8", b"gen-\xff\xfe\n"),
            ("no generation named", b"hello\n"),
            ("a missing generation", b"gen-000007\n"),
            ("empty", b""),
        ];
        for (what, bytes) in cases {
            std::fs::write(&current, bytes).unwrap();
            let err = Ledger::open(root.path(), FlushPolicy::default())
                .err()
                .unwrap_or_else(|| panic!("{what}: opened"));
            assert!(matches!(err, StoreError::Current { .. }), "{what}: {err}");
            assert!(err.to_string().contains("CURRENT"), "{what}: {err}");
            assert!(gen1.is_dir(), "{what}: the live generation is still there");
        }
        std::fs::remove_file(&current).unwrap();
        let err = Ledger::open(root.path(), FlushPolicy::default())
            .err()
            .expect("CURRENT missing beside gen-000001");
        assert!(err.to_string().contains("gen-000001"), "{err}");
        assert!(gen1.is_dir());
        // Put right, the store opens with its data.
        std::fs::write(&current, b"gen-000001\n").unwrap();
        let ledger = Ledger::open(root.path(), FlushPolicy::default()).unwrap();
        let p = ProjectId::parse("p").unwrap();
        assert!(ledger.current().ticket(&p, 1).unwrap().is_some());
    }

    /// The old generation's directory is removed once the last reader of it lets go, and not
    /// before.
    #[test]
    fn a_retired_generation_is_removed_when_its_last_reader_lets_go() {
        let root = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(root.path(), FlushPolicy::default()).unwrap();
        commit(&ledger.current(), vec![ticket(1, Status::Ready)], 1);
        let reader = ledger.current();
        let (generation, next) = ledger.begin_rebuild().unwrap();
        commit(&next, vec![ticket(1, Status::Ready)], 1);
        {
            let _lock = ledger.commit_lock();
            ledger.switch_to(generation, Arc::new(next)).unwrap();
        }
        let old = root.path().join("gen-000001");
        assert!(old.is_dir(), "a reader still holds it");
        assert_eq!(
            std::fs::read_to_string(root.path().join(CURRENT)).unwrap(),
            "gen-000002\n"
        );
        drop(reader);
        assert!(!old.exists(), "removed when the reader let go");
        assert!(root.path().join("gen-000002").is_dir());
    }
}
