//! Names: a project's `order_name`s in one string, their gram posting lists, and the
//! candidate search a `name_like` query starts from (see the module notes of [`super`]).

use roaring::RoaringBitmap;
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
/// candidate the trigrams leave, or every row of a group when the group is the smaller set).
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

/// A gram: one, two or three lower-cased name bytes, and how many (in the top byte, so that
/// `"a"`, `"\0a"` and `"\0\0a"` are three grams).
pub(super) type Gram = u32;

/// The longest gram. A needle this long or shorter is one gram, whose posting list is exactly
/// the rows that match it; a longer one is the intersection of its trigrams, which the rows
/// left must still be checked against.
pub(super) const GRAM_MAX: usize = 3;

fn gram(w: &[u8]) -> Gram {
    debug_assert!(w.len() <= GRAM_MAX);
    let bytes = w.iter().fold(0, |g, &b| g << 8 | b as u32);
    (w.len() as u32) << 24 | bytes
}

/// Every gram of `lower` (each window of one, two and three bytes), repeats included (callers
/// tolerate them).
pub(super) fn grams(lower: &str) -> impl Iterator<Item = Gram> + '_ {
    let b = lower.as_bytes();
    (1..=GRAM_MAX).flat_map(move |n| b.windows(n).map(gram))
}

/// The grams a needle is looked up by: itself when it is one gram, else its trigrams.
fn needle_grams(needle: &str) -> Vec<Gram> {
    let b = needle.as_bytes();
    if b.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Gram> = b.windows(b.len().min(GRAM_MAX)).map(gram).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// `name` lower-cased, without a copy when it already is (the usual case).
pub(super) fn lowered(name: &str) -> std::borrow::Cow<'_, str> {
    if name.is_ascii() && !name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(name.to_lowercase())
    }
}

/// Adds `slot` to the posting list of each gram of `lower`.
pub(super) fn add_name(names: &mut FxHashMap<Gram, RoaringBitmap>, slot: u32, lower: &str) {
    for g in grams(lower) {
        let list = names.entry(g).or_default();
        // A new row's slot is the largest: appending is the common case.
        if list.try_push(slot).is_err() {
            list.insert(slot);
        }
    }
}

/// The posting lists of every `(slot, lowered name)`, slots ascending, built at once: each gram's
/// slots gathered in a plain list (the one- and two-byte grams in a table indexed by their
/// bytes, without hashing), then turned into a bitmap in one pass. A bulk build's name index
/// is on the way to ready after a catch-up, and inserting into the bitmaps one by one cost
/// several times as much.
pub(super) fn index_all<'a>(
    names: &mut FxHashMap<Gram, RoaringBitmap>,
    rows: impl Iterator<Item = (u32, std::borrow::Cow<'a, str>)>,
) {
    fn push_once(list: &mut Vec<u32>, slot: u32) {
        if list.last() != Some(&slot) {
            list.push(slot);
        }
    }
    let mut short: Vec<Vec<u32>> = vec![Vec::new(); 256 + 65_536];
    let mut trigrams: FxHashMap<Gram, Vec<u32>> = FxHashMap::default();
    for (slot, lower) in rows {
        let b = lower.as_bytes();
        for &x in b {
            push_once(&mut short[x as usize], slot);
        }
        for w in b.windows(2) {
            push_once(
                &mut short[256 + ((w[0] as usize) << 8 | w[1] as usize)],
                slot,
            );
        }
        for w in b.windows(3) {
            push_once(trigrams.entry(gram(w)).or_default(), slot);
        }
    }
    let short = short.into_iter().enumerate().filter(|(_, l)| !l.is_empty());
    let short = short.map(|(i, l)| {
        let g = if i < 256 {
            gram(&[i as u8])
        } else {
            gram(&[((i - 256) >> 8) as u8, (i - 256) as u8])
        };
        (g, l)
    });
    for (g, list) in short.chain(trigrams) {
        let bits =
            RoaringBitmap::from_sorted_iter(list).expect("slots gathered in ascending order");
        // Into an empty bitmap (a bulk build's), the union takes `bits` whole.
        *names.entry(g).or_default() |= bits;
    }
}

/// Takes `slot` out of the posting list of each gram of `lower`.
pub(super) fn remove_name(names: &mut FxHashMap<Gram, RoaringBitmap>, slot: u32, lower: &str) {
    for g in grams(lower) {
        if let Some(list) = names.get_mut(&g) {
            list.remove(slot);
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

/// The rows a needle's grams leave.
pub(super) enum Candidates<'a> {
    /// A needle of at most [`GRAM_MAX`] bytes: its gram's posting list, every row of which
    /// holds the needle (nothing is left to check), borrowed from the index.
    Exact(&'a RoaringBitmap),
    /// A longer needle: the rows holding all its trigrams, to be checked against the needle.
    Holding(RoaringBitmap),
    /// Some gram of the needle is in no name: nothing matches.
    None,
}

/// The rows that may hold `needle`, if its rarest gram is in fewer than `than` rows; `None`
/// tells the caller to walk its group, the smaller set, instead.
pub(super) fn candidates<'a>(
    p: &'a ProjectRows,
    needle: &str,
    than: u64,
) -> Option<Candidates<'a>> {
    let grams = needle_grams(needle);
    let mut lists = Vec::with_capacity(grams.len());
    for g in &grams {
        match p.names.get(g) {
            Some(l) if !l.is_empty() => lists.push(l),
            _ => return Some(Candidates::None),
        }
    }
    lists.sort_unstable_by_key(|l| l.len());
    let (first, rest) = lists.split_first()?;
    if first.len() >= than {
        return None;
    }
    if needle.len() <= GRAM_MAX {
        return Some(Candidates::Exact(first));
    }
    let mut out = (*first).clone();
    for l in rest {
        out &= *l;
        if out.is_empty() {
            break;
        }
    }
    Some(Candidates::Holding(out))
}
