//! The waiting halves as a flush saves them: a compact binary form, since at full ingest
//! rate hundreds of thousands of halves wait. Names are written once, in a table, and
//! referred to by number.
//!
//! A checkpoint writes a part, with the halves that began to wait since the one before, and
//! an index ([`Parts`]) of which halves of which parts still wait: each half is written once,
//! however many flushes it waits through.
//!
//! `CWP3`, names (count, then length-prefixed UTF-8), starters (count, then half, paired
//! flag and arrival), answers (count, then key, half and arrival). An arrival is when the
//! half began to wait, in Unix milliseconds. Integers are little-endian. `CWP2` files, without
//! arrivals, and `CWP1` files, whose halves have no breaker name either, are still read.

use std::collections::BTreeMap;

use crate::halves::{Half, Name, Names, Side};

const MAGIC: &[u8; 4] = b"CWP3";
/// The format before halves carried their arrival.
const MAGIC_V2: &[u8; 4] = b"CWP2";
/// The format before halves carried a breaker name.
const MAGIC_V1: &[u8; 4] = b"CWP1";
const NONE: u32 = u32::MAX;
/// Bytes of a half without links, with its key or paired flag.
const HALF_BYTES: usize = 1 + 16 + 8 + 9 + 4 + 10 * 4 + 16 + 9 + 9 + 1 + 24 + 8;

/// (trace id, span id) of the client or producer span a call starts with.
pub type Key = (u128, u64);

/// Writes halves without copying them.
#[derive(Default)]
pub struct Encoder {
    /// Table index by name.
    names: foldhash::HashMap<Name, u32>,
    table: Vec<Name>,
    body: Vec<u8>,
}

impl Encoder {
    /// An encoder with room for about `halves` halves, so that the body is not copied as
    /// it grows.
    pub fn with_capacity(halves: usize) -> Self {
        Self {
            body: Vec::with_capacity(halves * HALF_BYTES),
            ..Self::default()
        }
    }

    /// A client or producer half that began to wait at `arrived` (Unix milliseconds).
    pub fn starter(&mut self, half: &Half, paired: bool, arrived: u64) {
        self.half(half);
        self.body.push(u8::from(paired));
        self.body.extend(arrived.to_le_bytes());
    }

    pub fn answer(&mut self, key: Key, half: &Half, arrived: u64) {
        self.body.extend(key.0.to_le_bytes());
        self.body.extend(key.1.to_le_bytes());
        self.half(half);
        self.body.extend(arrived.to_le_bytes());
    }

    /// The file: `starters` and `answers` are how many of each were written, in that order;
    /// `names` holds the names of their halves.
    pub fn finish(self, names: &Names, starters: usize, answers: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + self.table.len() * 24 + 16);
        out.extend(MAGIC);
        out.extend((self.table.len() as u32).to_le_bytes());
        for &name in &self.table {
            let name = names.text(name);
            out.extend((name.len() as u32).to_le_bytes());
            out.extend(name.as_bytes());
        }
        out.extend((starters as u64).to_le_bytes());
        out.extend((answers as u64).to_le_bytes());
        out.extend(self.body);
        out
    }

    fn name(&mut self, name: Option<Name>) {
        let index = match name {
            None => NONE,
            Some(name) => *self.names.entry(name).or_insert_with(|| {
                self.table.push(name);
                self.table.len() as u32 - 1
            }),
        };
        self.body.extend(index.to_le_bytes());
    }

    fn optional(&mut self, value: Option<i64>) {
        self.body.push(u8::from(value.is_some()));
        self.body.extend(value.unwrap_or(0).to_le_bytes());
    }

    fn half(&mut self, half: &Half) {
        let side = match half.side {
            Side::Client => 0,
            Side::Server => 1,
            Side::Producer => 2,
            Side::Consumer => 3,
        };
        self.body.push(side);
        self.body.extend(half.trace_id.to_le_bytes());
        self.body.extend(half.span_id.to_le_bytes());
        self.optional(half.parent_span_id.map(|p| p as i64));
        self.body.extend((half.links.len() as u32).to_le_bytes());
        for (trace, span) in &half.links {
            self.body.extend(trace.to_le_bytes());
            self.body.extend(span.to_le_bytes());
        }
        self.name(Some(half.service));
        for name in [
            half.instance,
            half.error_type,
            half.operation,
            half.api_version,
            half.peer,
            half.database,
            half.destination,
            half.breaker_state,
            half.breaker_name,
        ] {
            self.name(name);
        }
        self.body.extend(half.start_ns.to_le_bytes());
        self.body.extend(half.end_ns.to_le_bytes());
        self.optional(half.http_status);
        self.optional(half.grpc_code);
        self.body
            .push(u8::from(half.error) | u8::from(half.resent) << 1);
    }
}

/// What [`Encoder::finish`] wrote: starters with their paired flag, answers with their key,
/// each with its arrival (absent in files from before arrivals were kept).
pub struct Decoded {
    pub starters: Vec<(Half, bool, Option<u64>)>,
    pub answers: Vec<(Key, Half, Option<u64>)>,
}

pub fn decode(bytes: &[u8], names: &mut Names) -> Result<Decoded, String> {
    let mut reader = Reader {
        bytes,
        at: 0,
        optional_names: 9,
    };
    let mut with_arrivals = true;
    match reader.take(4)? {
        magic if magic == MAGIC => {}
        magic if magic == MAGIC_V2 => with_arrivals = false,
        magic if magic == MAGIC_V1 => {
            with_arrivals = false;
            reader.optional_names = 8;
        }
        _ => return Err("not a file of waiting halves".into()),
    }
    let count = reader.u32()? as usize;
    // Each name takes at least its 4-byte length: a count beyond that is corruption.
    if count > bytes.len() / 4 {
        return Err(format!("{count} names cannot fit in {} bytes", bytes.len()));
    }
    let mut table = Vec::with_capacity(count);
    for _ in 0..count {
        let len = reader.u32()? as usize;
        let text = std::str::from_utf8(reader.take(len)?).map_err(|e| e.to_string())?;
        table.push(names.get(text));
    }
    let starters = reader.u64()? as usize;
    let answers = reader.u64()? as usize;
    let mut decoded = Decoded {
        starters: Vec::new(),
        answers: Vec::new(),
    };
    for _ in 0..starters {
        let half = reader.half(&table)?;
        let paired = reader.u8()? != 0;
        let arrived = if with_arrivals {
            Some(reader.u64()?)
        } else {
            None
        };
        decoded.starters.push((half, paired, arrived));
    }
    for _ in 0..answers {
        let key = (reader.u128()?, reader.u64()?);
        let half = reader.half(&table)?;
        let arrived = if with_arrivals {
            Some(reader.u64()?)
        } else {
            None
        };
        decoded.answers.push((key, half, arrived));
    }
    if reader.at != bytes.len() {
        return Err(format!(
            "{} bytes after the last half",
            bytes.len() - reader.at
        ));
    }
    Ok(decoded)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// How many optional names a half has in this file's version.
    optional_names: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("cut short at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, String> {
        self.array().map(i64::from_le_bytes)
    }

    fn u128(&mut self) -> Result<u128, String> {
        self.array().map(u128::from_le_bytes)
    }

    fn optional(&mut self) -> Result<Option<i64>, String> {
        let present = self.u8()? != 0;
        let value = self.i64()?;
        Ok(present.then_some(value))
    }

    fn name(&mut self, table: &[Name]) -> Result<Option<Name>, String> {
        match self.u32()? {
            NONE => Ok(None),
            index => table
                .get(index as usize)
                .copied()
                .map(Some)
                .ok_or_else(|| format!("name {index} is not in the table")),
        }
    }

    fn half(&mut self, table: &[Name]) -> Result<Half, String> {
        let side = match self.u8()? {
            0 => Side::Client,
            1 => Side::Server,
            2 => Side::Producer,
            3 => Side::Consumer,
            other => return Err(format!("span side {other}")),
        };
        let trace_id = self.u128()?;
        let span_id = self.u64()?;
        let parent_span_id = self.optional()?.map(|p| p as u64);
        let link_count = self.u32()? as usize;
        if link_count > (self.bytes.len() - self.at) / 24 {
            return Err(format!("{link_count} links cannot fit in what is left"));
        }
        let mut links = Vec::with_capacity(link_count);
        for _ in 0..link_count {
            links.push((self.u128()?, self.u64()?));
        }
        let service = self.name(table)?.ok_or("a half without a service")?;
        let mut optional = [(); 9].map(|()| None);
        for slot in optional.iter_mut().take(self.optional_names) {
            *slot = self.name(table)?;
        }
        let [
            instance,
            error_type,
            operation,
            api_version,
            peer,
            database,
            destination,
            breaker_state,
            breaker_name,
        ] = optional;
        let start_ns = self.i64()?;
        let end_ns = self.i64()?;
        let http_status = self.optional()?;
        let grpc_code = self.optional()?;
        let flags = self.u8()?;
        Ok(Half {
            side,
            trace_id,
            span_id,
            parent_span_id,
            links,
            service,
            instance,
            start_ns,
            end_ns,
            error: flags & 1 != 0,
            http_status,
            grpc_code,
            error_type,
            operation,
            api_version,
            peer,
            database,
            destination,
            resent: flags & 2 != 0,
            breaker_state,
            breaker_name,
        })
    }
}

/// Where a waiting half is saved: the part, and its place there (starters first, then
/// answers, each in the order written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub part: u64,
    pub index: u32,
}

const INDEX_MAGIC: &[u8; 4] = b"CWI1";

/// The parts that still hold waiting halves, and which of their halves wait: one bit each.
///
/// `CWI1`, the part count, then each part's id, half count and bits (64 to a word).
#[derive(Debug, Default)]
pub struct Parts {
    parts: BTreeMap<u64, Part>,
    next: u64,
}

#[derive(Debug)]
struct Part {
    halves: u32,
    bits: Vec<u64>,
    waiting: u32,
}

impl Parts {
    /// The id the next part gets.
    pub fn next_id(&self) -> u64 {
        self.next
    }

    /// A new part of `halves` halves, all waiting; its id.
    pub fn add(&mut self, halves: u32) -> u64 {
        let id = self.next;
        self.next += 1;
        let mut bits = vec![u64::MAX; (halves as usize).div_ceil(64)];
        if !halves.is_multiple_of(64)
            && let Some(last) = bits.last_mut()
        {
            *last = (1 << (halves % 64)) - 1;
        }
        let part = Part {
            halves,
            bits,
            waiting: halves,
        };
        if halves > 0 {
            self.parts.insert(id, part);
        }
        id
    }

    /// The half saved at `saved` waits no more; a part with none left is dropped.
    pub fn forget(&mut self, saved: Option<Saved>) {
        let Some(saved) = saved else { return };
        let Some(part) = self.parts.get_mut(&saved.part) else {
            return;
        };
        let (word, bit) = (saved.index as usize / 64, saved.index % 64);
        if let Some(word) = part.bits.get_mut(word)
            && *word & (1 << bit) != 0
        {
            *word &= !(1 << bit);
            part.waiting -= 1;
            if part.waiting == 0 {
                self.parts.remove(&saved.part);
            }
        }
    }

    pub fn waits(&self, saved: Saved) -> bool {
        self.parts.get(&saved.part).is_some_and(|part| {
            let (word, bit) = (saved.index as usize / 64, saved.index % 64);
            part.bits.get(word).is_some_and(|w| w & (1 << bit) != 0)
        })
    }

    pub fn ids(&self) -> Vec<u64> {
        self.parts.keys().copied().collect()
    }

    /// Bytes of the bits, for the memory budget.
    pub fn memory_bytes(&self) -> usize {
        self.parts.values().map(|p| p.bits.len() * 8 + 48).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let words: usize = self.parts.values().map(|p| p.bits.len()).sum();
        let mut out = Vec::with_capacity(8 + self.parts.len() * 12 + words * 8);
        out.extend(INDEX_MAGIC);
        out.extend((self.parts.len() as u32).to_le_bytes());
        for (id, part) in &self.parts {
            out.extend(id.to_le_bytes());
            out.extend(part.halves.to_le_bytes());
            for word in &part.bits {
                out.extend(word.to_le_bytes());
            }
        }
        out
    }

    /// Whether `bytes` is an index rather than a whole file of halves (from before parts).
    pub fn is_index(bytes: &[u8]) -> bool {
        bytes.starts_with(INDEX_MAGIC)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader {
            bytes,
            at: 0,
            optional_names: 0,
        };
        if reader.take(4)? != INDEX_MAGIC {
            return Err("not an index of waiting halves".into());
        }
        let count = reader.u32()?;
        let mut parts = Self::default();
        for _ in 0..count {
            let id = reader.u64()?;
            let halves = reader.u32()?;
            let words = (halves as usize).div_ceil(64);
            if words > (bytes.len() - reader.at) / 8 {
                return Err(format!(
                    "part {id}: {halves} halves cannot fit in what is left"
                ));
            }
            let bits: Vec<u64> = (0..words).map(|_| reader.u64()).collect::<Result<_, _>>()?;
            let waiting: u32 = bits.iter().map(|w| w.count_ones()).sum();
            if waiting > halves {
                return Err(format!("part {id}: more halves wait than it holds"));
            }
            parts.next = parts.next.max(id.saturating_add(1));
            if waiting > 0 {
                parts.parts.insert(
                    id,
                    Part {
                        halves,
                        bits,
                        waiting,
                    },
                );
            }
        }
        if reader.at != bytes.len() {
            return Err(format!(
                "{} bytes after the last part",
                bytes.len() - reader.at
            ));
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(names: &mut Names, side: Side) -> Half {
        Half {
            side,
            trace_id: u128::MAX - 7,
            span_id: 42,
            parent_span_id: Some(u64::MAX),
            links: vec![(1, 2), (3, 4)],
            service: names.get("order-service"),
            instance: Some(names.get("order-service-2")),
            start_ns: -5,
            end_ns: 1_700_000_000_000_000_000,
            error: true,
            http_status: None,
            grpc_code: Some(14),
            error_type: Some(names.get("timeout")),
            operation: Some(names.get("payments.v1.PaymentService/Charge")),
            api_version: Some(names.get("v1")),
            peer: Some(names.get("payment-service")),
            database: None,
            destination: None,
            resent: true,
            breaker_state: Some(names.get("half_open")),
            breaker_name: Some(names.get("payments")),
        }
    }

    #[test]
    fn halves_come_back_as_they_went() {
        let mut names = Names::default();
        let starter = half(&mut names, Side::Producer);
        let answer = half(&mut names, Side::Consumer);
        let mut encoder = Encoder::default();
        encoder.starter(&starter, true, 1_700_000_000_123);
        encoder.answer((9, 10), &answer, 1_700_000_000_456);
        let bytes = encoder.finish(&names, 1, 1);
        let decoded = decode(&bytes, &mut names).unwrap();
        assert_eq!(
            decoded.starters,
            vec![(starter, true, Some(1_700_000_000_123))]
        );
        assert_eq!(
            decoded.answers,
            vec![((9, 10), answer, Some(1_700_000_000_456))]
        );
        // Every cut is an error, never a panic.
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], &mut names).is_err(), "cut at {len}");
        }
        let mut corrupt = bytes.clone();
        corrupt[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&corrupt, &mut names).is_err());
    }

    #[test]
    fn an_index_says_which_halves_of_each_part_still_wait() {
        let mut parts = Parts::default();
        let first = parts.add(70);
        let second = parts.add(3);
        parts.forget(Some(Saved {
            part: first,
            index: 65,
        }));
        for index in 0..3 {
            parts.forget(Some(Saved {
                part: second,
                index,
            }));
        }
        let bytes = parts.encode();
        let read = Parts::decode(&bytes).unwrap();
        assert_eq!(
            read.ids(),
            vec![first],
            "a part with nothing waiting is left out"
        );
        assert_eq!(read.next_id(), 1, "ids go on after the parts named");
        let waits = |index| read.waits(Saved { part: first, index });
        assert!(waits(0) && waits(64) && waits(69));
        assert!(!waits(65) && !waits(70), "forgotten, and past the end");
        for len in 0..bytes.len() {
            assert!(Parts::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut lying = bytes.clone();
        lying[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Parts::decode(&lying).is_err(), "more halves than bytes");
    }

    #[test]
    fn files_from_before_arrivals_are_read() {
        let mut names = Names::default();
        let starter = half(&mut names, Side::Client);
        let answer = half(&mut names, Side::Server);
        let mut encoder = Encoder::default();
        let arrived = 0x5a5a_5a5a_5a5a_5a5a_u64;
        encoder.starter(&starter, false, arrived);
        encoder.answer((1, 2), &answer, arrived);
        let mut bytes = encoder.finish(&names, 1, 1);
        // The same file in `CWP2`: without the two arrivals.
        for _ in 0..2 {
            let at = bytes
                .windows(8)
                .rposition(|w| w == arrived.to_le_bytes())
                .unwrap();
            bytes.drain(at..at + 8);
        }
        bytes[..4].copy_from_slice(MAGIC_V2);
        let decoded = decode(&bytes, &mut names).unwrap();
        assert_eq!(decoded.starters, vec![(starter, false, None)]);
        assert_eq!(decoded.answers, vec![((1, 2), answer, None)]);
    }

    #[test]
    fn files_from_before_breaker_names_are_read() {
        let mut names = Names::default();
        let mut old = half(&mut names, Side::Client);
        old.breaker_name = None;
        let mut encoder = Encoder::default();
        encoder.starter(&old, false, 7);
        let mut bytes = encoder.finish(&names, 1, 0);
        // Nor an arrival, which ends the file.
        bytes.truncate(bytes.len() - 8);
        // A `CWP1` half ends its names with the breaker state: drop the (absent) name after
        // it, which comes just before the start time.
        let mut absent_then_start = NONE.to_le_bytes().to_vec();
        absent_then_start.extend(old.start_ns.to_le_bytes());
        let at = bytes
            .windows(absent_then_start.len())
            .position(|w| w == absent_then_start)
            .unwrap();
        bytes.drain(at..at + 4);
        bytes[..4].copy_from_slice(MAGIC_V1);
        let decoded = decode(&bytes, &mut names).unwrap();
        assert_eq!(decoded.starters, vec![(old, false, None)]);
    }
}
