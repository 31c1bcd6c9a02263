//! Names: a project's `order_name`s in one string, their trigram posting lists, and the
//! candidate search a `name_like` query starts from (see the module notes of [`super`]).

use rustc_hash::FxHashMap;

use super::{ProjectRows, Slot};

/// A name's place in [`Names`]: byte offset and length. (A length fits in 32 bits: a name comes
/// in an event, a NATS message, and nats-server caps messages at 64 MiB at most.)
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Span {
    pub(super) at: u64,
    pub(super) len: u32,
}

/// A project's `order_name`s, back to back in one string, in the order their rows came.
///
/// Why not a `Box<str>` per row: a name search checks thousands of names per request (every
/// candidate the trigrams leave, or every row of a group for a needle shorter than a trigram).
/// Names allocated one by one lie all over the heap, and each check was a cache and TLB miss:
/// 140–200 ns a candidate on this machine, and the first load of each name was 60% of a profiled
/// `name_like` query. Here rows checked in slot order read the string in address order, and a
/// row costs no allocation of its own.
///
/// A renamed or removed row's old bytes stay behind as `dead`; the string is rewritten, in slot
/// order, once they are half of it.
#[derive(Default)]
pub(super) struct Names {
    pub(super) text: String,
    pub(super) dead: usize,
}

impl Names {
    pub(super) fn get(&self, s: Span) -> &str {
        &self.text[s.at as usize..s.at as usize + s.len as usize]
    }

    /// Starts loading a name (see [`prefetch`]).
    pub(super) fn prefetch(&self, s: Span) {
        if let Some(b) = self.text.as_bytes().get(s.at as usize) {
            prefetch(b);
        }
    }

    pub(super) fn push(&mut self, name: &str) -> Span {
        let at = self.text.len() as u64;
        self.text.push_str(name);
        Span {
            at,
            len: name.len() as u32,
        }
    }

    /// Marks the bytes of `s`, which no slot points at any more, as no longer used, and rewrites
    /// the string once they are half of it.
    pub(super) fn free(&mut self, s: Span, slots: &mut [Slot]) {
        self.dead += s.len as usize;
        if self.dead > 4096 && self.dead * 2 > self.text.len() {
            self.compact(slots);
        }
    }

    /// The string again, with only the names `slots` point at, in slot order.
    pub(super) fn compact(&mut self, slots: &mut [Slot]) {
        let mut text = String::with_capacity(self.text.len() - self.dead);
        for s in slots {
            let name = self.get(s.name);
            s.name = Span {
                at: text.len() as u64,
                len: s.name.len,
            };
            text.push_str(name);
        }
        self.text = text;
        self.dead = 0;
    }
}

/// Whether `name` holds `needle` (already lower-cased), ignoring case. ASCII names (the usual
/// case) are compared in place; others are lower-cased first, as the trigram index was built.
pub(super) fn name_holds(name: &str, needle: &str) -> bool {
    if name.is_ascii() {
        let n = needle.as_bytes();
        n.is_empty()
            || name
                .as_bytes()
                .windows(n.len())
                .any(|w| w.eq_ignore_ascii_case(n))
    } else {
        name.to_lowercase().contains(needle)
    }
}

/// A trigram of lower-cased name bytes.
pub(super) type Trigram = u32;

/// The trigrams of `lower`, in order, repeats included (callers tolerate them).
pub(super) fn trigrams(lower: &str) -> impl Iterator<Item = Trigram> + '_ {
    lower
        .as_bytes()
        .windows(3)
        .map(|w| (w[0] as u32) << 16 | (w[1] as u32) << 8 | w[2] as u32)
}

/// `name` lower-cased, without a copy when it already is (the usual case).
pub(super) fn lowered(name: &str) -> std::borrow::Cow<'_, str> {
    if name.is_ascii() && !name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(name.to_lowercase())
    }
}

/// Adds `slot` to the posting list of each trigram of `lower` (once).
pub(super) fn add_name(names: &mut FxHashMap<Trigram, Vec<u32>>, slot: u32, lower: &str) {
    for g in trigrams(lower) {
        let list = names.entry(g).or_default();
        // New slots are the largest: appending is the common case.
        if list.last().is_none_or(|&l| l < slot) {
            list.push(slot);
        } else if let Err(i) = list.binary_search(&slot) {
            list.insert(i, slot);
        }
    }
}

/// How many candidates ahead [`Index::query`] asks for rows. Chosen, not tuned: far enough
/// that a miss (~100 ns here) is covered by the work on the candidates in between, near enough
/// that what was asked for is still in cache when it is reached.
pub(super) const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to start loading the memory at `x` (both ends, should it straddle two cache
/// lines), without waiting for it. A hint only: no effect on what the program computes.
#[inline(always)]
pub(super) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p: *const i8 = (x as *const T).cast();
        // SAFETY: `sse` is part of every x86_64 target, and a prefetch never faults, whatever
        // the address (both are within `x` here anyway).
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(size_of::<T>().saturating_sub(1)));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// The slots (ascending) whose name holds every trigram of `needle`, if the needle has trigrams
/// and its rarest trigram is rarer than `than` rows; `None` tells the caller to walk its group.
pub(super) fn candidates(p: &ProjectRows, needle: &str, than: u64) -> Option<Vec<u32>> {
    let mut grams: Vec<Trigram> = trigrams(needle).collect();
    grams.sort_unstable();
    grams.dedup();
    if grams.is_empty() {
        return None;
    }
    let mut lists = Vec::with_capacity(grams.len());
    for g in &grams {
        match p.names.get(g) {
            Some(l) => lists.push(l.as_slice()),
            None => return Some(Vec::new()),
        }
    }
    lists.sort_unstable_by_key(|l| l.len());
    if lists[0].len() as u64 >= than {
        return None;
    }
    let mut out = lists[0].to_vec();
    for l in &lists[1..] {
        intersect(&mut out, l);
        if out.is_empty() {
            break;
        }
    }
    Some(out)
}

/// Keeps in `out` the slots that `list` holds too; both ascending. Lists of like length are
/// merged in one pass (a needle's trigrams are often about as common as each other); a list
/// much longer than `out` is binary-searched, which then touches less of it.
pub(super) fn intersect(out: &mut Vec<u32>, list: &[u32]) {
    if list.len() > 16 * out.len() {
        out.retain(|s| list.binary_search(s).is_ok());
        return;
    }
    let mut rest = list;
    out.retain(|&s| {
        while let Some((&first, tail)) = rest.split_first() {
            if first >= s {
                return first == s;
            }
            rest = tail;
        }
        false
    });
}
