//! The fast path of [`super::decode`]: a scanner for the usual shape of an event (one JSON
//! object, strings without escapes, `order_id` a plain integer) that borrows every field from
//! the payload instead of allocating it, in one pass with no JSON tree.
//!
//! It only ever accepts: anything it does not know for sure (an escape, a nested unknown value, a
//! duplicate key, a `null`, a missing field, malformed JSON) makes it return `None`, and `decode`
//! takes the serde path, which reads every valid JSON and names the precise reason for a
//! rejection. Where the scanner answers, both paths agree (a test checks it on mutated payloads).

/// The fields of an event, borrowed from its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fields<'a> {
    pub attrs: Attrs<'a>,
    pub data: Data<'a>,
}

/// The CloudEvents attributes, borrowed from the payload or from the serde path's owned copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attrs<'a> {
    pub specversion: &'a str,
    pub id: &'a str,
    pub source: &'a str,
    pub ty: &'a str,
    pub time: &'a str,
}

/// The fields of `data`, borrowed like [`Attrs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Data<'a> {
    pub project_id: &'a str,
    pub order_id: u64,
    pub execute_uuid: Option<&'a str>,
    pub order_name: Option<&'a str>,
    pub creator: Option<&'a str>,
    pub region_ids: Option<&'a str>,
    pub job_type: Option<&'a str>,
    pub batch_index: Option<u64>,
    pub instance_id: Option<u64>,
    pub message: Option<&'a str>,
    /// What only the serde path reads (the scanner's are always empty).
    pub extra: super::v11::Extra<'a>,
}

/// Scans `payload`; `None` sends the caller to the serde path.
pub(super) fn fields(payload: &[u8]) -> Option<Fields<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut c = Cursor {
        text,
        bytes: payload,
        at: 0,
    };
    let (mut specversion, mut id, mut source, mut ty, mut time, mut data) =
        (None, None, None, None, None, None);
    c.object(|c, key| match key {
        "specversion" => once(&mut specversion, c.string()?),
        "id" => once(&mut id, c.string()?),
        "source" => once(&mut source, c.string()?),
        "type" => once(&mut ty, c.string()?),
        "time" => once(&mut time, c.string()?),
        "data" => {
            let d = c.data()?;
            once(&mut data, d)
        }
        _ => c.skip_scalar(),
    })?;
    c.space();
    if c.at != c.bytes.len() {
        return None;
    }
    Some(Fields {
        attrs: Attrs {
            specversion: specversion?,
            id: id?,
            source: source?,
            ty: ty?,
            time: time?,
        },
        data: data?,
    })
}

/// Sets a field seen for the first time; a second sighting is the serde path's to reject.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn space(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// `{ "key": value, ... }`, each value read by `field`; an empty object is refused (it
    /// lacks required fields).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes or control characters (the text was checked to be UTF-8, and a
    /// quote is always a character boundary). An event's strings are short, too short for a
    /// vectorised search to pay for its set-up, so the end is looked for eight bytes at a time in
    /// a machine word ([`stop`]).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let rest = &self.bytes[start..];
        let end = stop(rest)?;
        if rest[end] != b'"' {
            return None;
        }
        self.at = start + end + 1;
        Some(&self.text[start..start + end])
    }

    /// A non-negative integer that fits a u64, without a fraction or exponent.
    fn integer(&mut self) -> Option<u64> {
        self.space();
        let start = self.at;
        let mut n: u64 = 0;
        while let Some(d) = self.bytes.get(self.at).filter(|b| b.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        // JSON has no leading zeros; a fraction or exponent follows the digits directly.
        if digits == 0
            || (digits > 1 && self.bytes[start] == b'0')
            || matches!(self.bytes.get(self.at), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        Some(n)
    }

    /// An unknown field's value: a string, number, `true` or `false`. (Nested values and `null`
    /// are left to the serde path.)
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                while matches!(
                    self.bytes.get(self.at),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.at += 1;
                }
                valid_json_number(&self.text[start..self.at]).then_some(())
            }
            _ => None,
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    fn data(&mut self) -> Option<Data<'a>> {
        let (mut project_id, mut order_id) = (None, None);
        let (mut batch_index, mut instance_id, mut message) = (None, None, None);
        let (mut execute_uuid, mut order_name, mut creator, mut region_ids, mut job_type) =
            (None, None, None, None, None);
        self.object(|c, key| match key {
            "project_id" => once(&mut project_id, c.string()?),
            "order_id" => once(&mut order_id, c.integer()?),
            "execute_uuid" => once(&mut execute_uuid, c.string()?),
            "order_name" => once(&mut order_name, c.string()?),
            "creator" => once(&mut creator, c.string()?),
            "region_ids" => once(&mut region_ids, c.string()?),
            "job_type" => once(&mut job_type, c.string()?),
            "batch_index" => once(&mut batch_index, c.integer()?),
            "instance_id" => once(&mut instance_id, c.integer()?),
            "message" => once(&mut message, c.string()?),
            k if super::v11::SERDE_ONLY_KEYS.contains(&k) => None,
            _ => c.skip_scalar(),
        })?;
        Some(Data {
            project_id: project_id?,
            order_id: order_id?,
            execute_uuid,
            order_name,
            creator,
            region_ids,
            job_type,
            batch_index,
            instance_id,
            message,
            extra: Default::default(),
        })
    }
}

/// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn valid_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// The first byte of `bytes` that ends a plain string: a quote, a backslash or a control
/// character. Eight bytes at a time, by the usual word tricks: in `x - 0x01…01 & !x & 0x80…80`
/// the lowest flagged byte is the lowest zero byte of `x` (a borrow only ever flags bytes above
/// a true one, and the lowest is all that is read), and a quote or a backslash is a zero byte
/// once the word is XORed with it; a control character (below 0x20) flags itself in
/// `w - 0x20…20 & !w`.
fn stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let flagged = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if flagged != 0 {
            return Some(at + (flagged.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::stop;

    #[test]
    fn a_string_ends_where_a_byte_by_byte_search_says() {
        let naive = |b: &[u8]| b.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        // Every length up to three words, each stop byte and its neighbours at every place, over
        // a background of plain ASCII and of UTF-8 bytes (high bit set).
        let stops = [
            b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff,
        ];
        for background in [b'a', 0xc3] {
            for len in 0..24 {
                assert_eq!(stop(&vec![background; len]), naive(&vec![background; len]));
                for at in 0..len {
                    for &s in &stops {
                        for &t in &stops {
                            let mut bytes = vec![background; len];
                            bytes[at] = s;
                            bytes[(at + 3) % len] = t;
                            assert_eq!(stop(&bytes), naive(&bytes), "{bytes:02x?}");
                        }
                    }
                }
            }
        }
    }
}
