//! The query log's row format: rows packed into blocks (SQLite BLOBs), with
//! names, clients and outcomes replaced by dictionary ids.
//!
//! A row costs 7 to 10 bytes in a block instead of about 150 as a table row
//! with indexes (see ARCHITECTURE.md, "The query log"). Each field is an
//! unsigned LEB128 varint:
//!
//! ```text
//! block := version(1) flags(1) count base_ms row*
//! row   := time_delta seq [client] name record_type outcome extra
//! ```
//!
//! - `time_delta`: zigzag of `time_ms` minus the previous row's (the first
//!   row's minus `base_ms`), so rows in any order encode, and in time order
//!   cost 1 to 3 bytes;
//! - `seq`: `id - time_ms * 1000` (see [`row_id`]), almost always 0;
//! - `client`: present when the block's flags say so (the current hour's
//!   blocks mix clients; a sealed block is one client's and its key says which);
//! - `extra`: `(upstream_ms + 1, or 0 for none) << 1 | cache_hit`.
//!
//! Decoding refuses a block that ends early or carries an unknown version,
//! rather than inventing rows.

/// One query-log row with its dictionary ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRow {
    /// Unique, and in time order: see [`row_id`].
    pub id: i64,
    /// UTC Unix milliseconds.
    pub time_ms: i64,
    /// `log_clients.id`.
    pub client: u32,
    /// `log_names.id`.
    pub name: u32,
    pub record_type: u16,
    /// `log_outcomes.id`.
    pub outcome: u32,
    pub cache_hit: bool,
    pub upstream_ms: Option<u32>,
}

/// Row ids are `time_ms * 1000 + n`, `n` counting rows of the same
/// millisecond (and absorbing rows whose clock ran backwards), so an id says
/// when its row was written and ids sort as time does. `last_id` is the
/// previous id handed out; the result is always greater.
pub fn row_id(time_ms: i64, last_id: i64) -> i64 {
    (time_ms.max(0) * ID_PER_MS).max(last_id + 1)
}

/// Ids per millisecond: see [`row_id`].
pub const ID_PER_MS: i64 = 1000;

/// The millisecond an id was handed out in (for paging by id).
pub fn id_time_ms(id: i64) -> i64 {
    id.div_euclid(ID_PER_MS)
}

const VERSION: u8 = 1;
const WITH_CLIENT: u8 = 1;

/// Rows per sealed block at most: about 2 KB, so two or more blocks share a
/// 4 KB page and none spills into overflow pages (which waste half a page each).
pub const SEALED_BLOCK_ROWS: usize = 256;

/// A block that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query-log block is damaged or from a newer Hedgerow ({0}); `PRAGMA integrity_check` or a backup may help")]
pub struct BlockError(&'static str);

/// Appends `rows`, encoded, to `out`. With `with_client` false every row
/// must belong to one client, which the block's key records instead.
pub fn encode(rows: &[BlockRow], with_client: bool, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.push(if with_client { WITH_CLIENT } else { 0 });
    put(out, rows.len() as u64);
    let base = rows.first().map_or(0, |row| row.time_ms);
    put(out, zigzag(base));
    let mut previous = base;
    for row in rows {
        debug_assert!(with_client || row.client == rows[0].client, "a block without clients holds one client");
        put(out, zigzag(row.time_ms - previous));
        previous = row.time_ms;
        put(out, (row.id - row.time_ms * ID_PER_MS).max(0) as u64);
        if with_client {
            put(out, u64::from(row.client));
        }
        put(out, u64::from(row.name));
        put(out, u64::from(row.record_type));
        put(out, u64::from(row.outcome));
        let upstream = row.upstream_ms.map_or(0, |ms| u64::from(ms) + 1);
        put(out, upstream << 1 | u64::from(row.cache_hit));
    }
}

/// Decodes a block, appending its rows to `out`. `client` is the block's
/// client when the block does not carry one per row (a sealed block).
pub fn decode(data: &[u8], client: u32, out: &mut Vec<BlockRow>) -> Result<(), BlockError> {
    let mut reader = Reader { data, at: 0 };
    if reader.byte()? != VERSION {
        return Err(BlockError("unknown block version"));
    }
    let with_client = reader.byte()? & WITH_CLIENT != 0;
    let count = reader.varint()? as usize;
    if count > data.len() {
        return Err(BlockError("row count larger than the block"));
    }
    out.reserve(count);
    let mut time_ms = unzigzag(reader.varint()?);
    for _ in 0..count {
        time_ms += unzigzag(reader.varint()?);
        let seq = reader.varint()? as i64;
        let client = if with_client { reader.small()? } else { client };
        let name = reader.small()?;
        let record_type = u16::try_from(reader.varint()?).map_err(|_| BlockError("record type out of range"))?;
        let outcome = reader.small()?;
        let extra = reader.varint()?;
        let upstream = extra >> 1;
        out.push(BlockRow {
            id: time_ms * ID_PER_MS + seq,
            time_ms,
            client,
            name,
            record_type,
            outcome,
            cache_hit: extra & 1 != 0,
            upstream_ms: (upstream > 0).then(|| u32::try_from(upstream - 1).unwrap_or(u32::MAX)),
        });
    }
    if reader.at != data.len() {
        return Err(BlockError("bytes after the last row"));
    }
    Ok(())
}

/// Rows in a block, read from its header alone.
pub fn row_count(data: &[u8]) -> Result<usize, BlockError> {
    let mut reader = Reader { data, at: 2 };
    Ok(reader.varint()? as usize)
}

/// `log_sealed.key`: hour, then client, then chunk, so one hour's blocks sit
/// together (sealing appends, retention deletes one range per hour) and a
/// client's blocks in an hour are one range.
pub fn sealed_key(hour: i64, client: u32, chunk: u32) -> i64 {
    debug_assert!((0..1 << HOUR_BITS).contains(&hour) && client < 1 << CLIENT_BITS && chunk < 1 << CHUNK_BITS);
    hour << (CLIENT_BITS + CHUNK_BITS) | i64::from(client) << CHUNK_BITS | i64::from(chunk)
}

/// The hour, client and chunk of a sealed key.
pub fn split_sealed_key(key: i64) -> (i64, u32, u32) {
    (
        key >> (CLIENT_BITS + CHUNK_BITS),
        ((key >> CHUNK_BITS) & ((1 << CLIENT_BITS) - 1)) as u32,
        (key & ((1 << CHUNK_BITS) - 1)) as u32,
    )
}

/// The keys of every sealed block of `hour` (`first..last`, end exclusive).
pub fn hour_keys(hour: i64) -> std::ops::Range<i64> {
    sealed_key(hour, 0, 0)..sealed_key(hour + 1, 0, 0)
}

/// The keys of `client`'s sealed blocks in `hour` (end exclusive).
pub fn client_hour_keys(hour: i64, client: u32) -> std::ops::Range<i64> {
    let first = sealed_key(hour, client, 0);
    first..first + (1 << CHUNK_BITS)
}

const HOUR_BITS: u32 = 24;
/// Client ids up to 67 million: ids are never reused, and a school makes a
/// few thousand a year (more with hashed guest addresses, one per guest per day).
pub const CLIENT_BITS: u32 = 26;
const CHUNK_BITS: u32 = 13;

/// Sealed blocks one client may have in one hour. A client that sends more
/// than `SEALED_BLOCK_ROWS` times this many queries in an hour (a router or
/// proxy forwarding a whole school, or a flood) gets bigger blocks instead:
/// see `seal::write_sealed_hour`.
pub const CHUNKS_PER_CLIENT_HOUR: u32 = 1 << CHUNK_BITS;

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, BlockError> {
        let byte = *self.data.get(self.at).ok_or(BlockError("block ends early"))?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64, BlockError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BlockError("varint too long"))
    }

    fn small(&mut self) -> Result<u32, BlockError> {
        u32::try_from(self.varint()?).map_err(|_| BlockError("id out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, client: u32, name: u32) -> BlockRow {
        BlockRow {
            id,
            time_ms: id_time_ms(id),
            client,
            name,
            record_type: 28,
            outcome: 3,
            cache_hit: name % 2 == 0,
            upstream_ms: (name % 3 == 0).then_some(name * 7),
        }
    }

    #[test]
    fn rows_survive_encoding_in_any_order() {
        let mut last = 0;
        let mut rows: Vec<BlockRow> = (0..500)
            .map(|n: u32| {
                last = row_id(1_764_500_000_000 + i64::from(n % 37) * 1_013, last);
                row(last, n % 5, n * 31)
            })
            .collect();
        rows.swap(3, 400);
        let mut data = Vec::new();
        encode(&rows, true, &mut data);
        let mut back = Vec::new();
        decode(&data, 0, &mut back).unwrap();
        assert_eq!(back, rows);
        assert_eq!(row_count(&data).unwrap(), 500);
        assert!(data.len() < 500 * 12, "{} bytes for 500 rows", data.len());
    }

    #[test]
    fn a_sealed_block_takes_its_client_from_the_key() {
        let rows = [row(1_000_000_000_000_000, 9, 1), row(1_000_000_000_500_001, 9, 2)];
        let mut data = Vec::new();
        encode(&rows, false, &mut data);
        let mut back = Vec::new();
        decode(&data, 9, &mut back).unwrap();
        assert_eq!(back, rows);
    }

    #[test]
    fn damaged_blocks_are_refused() {
        let mut data = Vec::new();
        encode(&[row(5_000_000, 1, 1)], true, &mut data);
        for cut in 0..data.len() {
            assert!(decode(&data[..cut], 0, &mut Vec::new()).is_err(), "cut at {cut}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(decode(&longer, 0, &mut Vec::new()).is_err());
        data[0] = 9;
        assert!(decode(&data, 0, &mut Vec::new()).is_err());
    }

    #[test]
    fn ids_are_unique_and_say_when() {
        let first = row_id(1_000, 0);
        let second = row_id(1_000, first);
        let earlier_clock = row_id(999, second);
        assert_eq!(first, 1_000_000);
        assert_eq!(second, 1_000_001);
        assert_eq!(earlier_clock, 1_000_002);
        assert_eq!(id_time_ms(second), 1_000);
    }

    #[test]
    fn sealed_keys_order_by_hour_then_client_then_chunk() {
        let key = sealed_key(490_000, 2_500, 7);
        assert_eq!(split_sealed_key(key), (490_000, 2_500, 7));
        assert!(sealed_key(490_000, 2_500, 8191) < sealed_key(490_000, 2_501, 0));
        assert!(sealed_key(490_000, (1 << CLIENT_BITS) - 1, 8191) < sealed_key(490_001, 0, 0));
        assert!(hour_keys(490_000).contains(&key));
        assert!(client_hour_keys(490_000, 2_500).contains(&key));
        assert!(!client_hour_keys(490_000, 2_501).contains(&key));
    }
}
