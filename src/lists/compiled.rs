//! The compiled list: a versioned file that answers "which categories list
//! this name or a parent of it?" without allocating. Opening it maps the
//! file to check it, copies the small tables and bloom filters, and reads
//! each fst into memory backed by 2 MiB pages ([`read_into_huge_pages`]).
//!
//! # File layout (little-endian)
//!
//! ```text
//! offset  size  field
//!      0    16  magic "HEDGEROW-LISTS\n\0"
//!     16     4  format version (FORMAT_VERSION)
//!     20     4  flags: bit 0 = bloom filters are present
//!     24     8  fingerprint of the inputs (compile::fingerprint)
//!     32     8  number of distinct names
//!     40     8  total file length (catches truncation)
//!     48     1  1 if some name is a single label (a whole top-level
//!               domain), else 0
//!     50     2  number of parts P (1-255)
//!     56    16  source id table: offset, length
//!     72     8  offset of the bucket table: 256 bytes, bucket -> part
//!     80     8  offset of the part table: P x (fst offset, fst length,
//!               bloom offset, bloom length, values offset, values
//!               length), u64 each
//!    104     8  FNV-1a 64 of the header (this field as zero), source
//!               table, bucket table, part table, blooms and value tables
//!    128     …  source ids: u32 count, then (u16 length, UTF-8 bytes) each
//!      …     …  bucket table, part table, blooms, value tables, fsts (each fst carries its
//!               own CRC32C, checked on open)
//! ```
//!
//! # Parts
//!
//! Building an fst is single-threaded and is most of the compile time, so a
//! large list is split into P parts built in parallel. A name goes to a part
//! by its *group*, its last two labels (`example.com` for
//! `www.example.com`): hashed to one of 255 buckets, and the bucket table
//! maps buckets to parts (assigned to balance the parts). Every level of a
//! query that has two or more labels is in the query's group, so one part
//! answers the whole query; the rare one-label names (a whole top-level
//! domain) are copied into every part.
//!
//! # Bloom filter
//!
//! Each part has a bloom filter (the `bloomfilter` crate; 2% false
//! positives with two hash functions, so a miss usually costs one probe)
//! over the *groups* of its names, not the names: one check per query
//! answers "is anything in `example.com` listed?", and most queries stop
//! there. `benches/lookup.rs` measured it paying for itself on a
//! mostly-unlisted query mix; `CompileOptions` can leave it out.
//!
//! # Keys and values
//!
//! A key is a listed name reversed by label (`com.example.www`), so every
//! parent of a name is a prefix of its key that ends at a label boundary. A
//! key's fst value is an index into its part's value table, whose entries
//! are three u64s: the categories that block the name (one bit per category,
//! 64 of them), the categories with an exception (adblock `@@`) for it, and
//! 1 + the index of the first source that listed exactly this key (0 =
//! none). Few keys differ in all three, so the table is small (one entry
//! per distinct combination) and stays in cache; format 3 packed 24
//! category bits of each into the fst value itself.
//!
//! # Invariant
//!
//! The file is never changed in place: a rebuild writes a new file and
//! renames it over the old one, so a server opening the file while it is
//! replaced reads the old inode or the new one, never half of each. Once
//! open, the lists no longer depend on the file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bloomfilter::Bloom;
use fst::raw::{Fst, Output};
use memmap2::Mmap;

use crate::policy::category::CategorySet;

pub(crate) const MAGIC: [u8; 16] = *b"HEDGEROW-LISTS\n\0";
/// Bumped whenever the layout or the meaning of keys or values changes.
/// 2: groups are bucketed with `bucket_of_group`'s word-at-a-time hash.
/// 3: bloom filters hold `group_hash`es, not the groups' bytes.
/// 4: 64 categories: fst values index a per-part table of values.
pub const FORMAT_VERSION: u32 = 4;
pub(crate) const HEADER_LEN: usize = 128;
pub(crate) const FLAG_BLOOM: u32 = 1;
pub(crate) const CHECKSUM_AT: usize = 104;

/// The fixed header (see the file layout above): the one place its offsets
/// live, written by `compile` and read by [`CompiledLists::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u32,
    pub flags: u32,
    pub fingerprint: u64,
    pub names: u64,
    pub file_len: u64,
    pub whole_tlds: bool,
    pub parts: u16,
    pub sources_at: u64,
    pub sources_len: u64,
    pub buckets_at: u64,
    pub table_at: u64,
}

impl Header {
    /// The header's bytes, with the checksum field zero (see [`Header::set_checksum`]).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[..16].copy_from_slice(&MAGIC);
        header[16..20].copy_from_slice(&self.version.to_le_bytes());
        header[20..24].copy_from_slice(&self.flags.to_le_bytes());
        header[24..32].copy_from_slice(&self.fingerprint.to_le_bytes());
        header[32..40].copy_from_slice(&self.names.to_le_bytes());
        header[40..48].copy_from_slice(&self.file_len.to_le_bytes());
        header[48] = u8::from(self.whole_tlds);
        header[50..52].copy_from_slice(&self.parts.to_le_bytes());
        header[56..64].copy_from_slice(&self.sources_at.to_le_bytes());
        header[64..72].copy_from_slice(&self.sources_len.to_le_bytes());
        header[72..80].copy_from_slice(&self.buckets_at.to_le_bytes());
        header[80..88].copy_from_slice(&self.table_at.to_le_bytes());
        header
    }

    /// Reads the fields of a header; `bytes` holds at least [`HEADER_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Header {
        Header {
            version: read_u32(bytes, 16),
            flags: read_u32(bytes, 20),
            fingerprint: read_u64(bytes, 24),
            names: read_u64(bytes, 32),
            file_len: read_u64(bytes, 40),
            whole_tlds: bytes[48] != 0,
            parts: u16::from_le_bytes([bytes[50], bytes[51]]),
            sources_at: read_u64(bytes, 56),
            sources_len: read_u64(bytes, 64),
            buckets_at: read_u64(bytes, 72),
            table_at: read_u64(bytes, 80),
        }
    }

    pub fn checksum(bytes: &[u8]) -> u64 {
        read_u64(bytes, CHECKSUM_AT)
    }

    pub fn set_checksum(header: &mut [u8; HEADER_LEN], checksum: u64) {
        header[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&checksum.to_le_bytes());
    }
}
/// Buckets a name's group hashes to; bucket [`REPLICATED`] marks one-label
/// names, which every part holds.
pub(crate) const BUCKETS: usize = 255;
pub(crate) const REPLICATED: u8 = 255;
pub(crate) const PART_ENTRY_LEN: usize = 48;

/// Where a name's *group* starts: its last two labels (`example.com` in
/// `www.example.com`), or the whole name if it has one label.
#[inline]
pub(crate) fn group_start(name: &[u8]) -> usize {
    match label_start(name, name.len()) {
        0 => 0,
        tld_start => label_start(name, tld_start - 1),
    }
}

/// The bucket of a group written forward (`example.com`), case-blind.
#[inline]
pub(crate) fn bucket_of_group(group: &[u8]) -> u8 {
    bucket_of_hash(group_hash(group))
}

/// The bucket of a group from its [`group_hash`]: the high half, scaled to
/// 0..BUCKETS without a division.
#[inline]
fn bucket_of_hash(hash: u64) -> u8 {
    (((hash >> 32) * BUCKETS as u64) >> 32) as u8
}

/// A 64-bit hash of a group written forward, case-blind: eight bytes per
/// multiply. Computed once per lookup, it picks the part and is the key of
/// the bloom filter, whose own hash (SipHash) then runs over 8 bytes rather
/// than the group's text: together with byte-at-a-time FNV for the bucket,
/// hashing text cost about 75 ns of a 250 ns unlisted-name lookup.
#[inline]
pub(crate) fn group_hash(group: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash = (group.len() as u64).wrapping_mul(K);
    let mut chunks = group.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        hash = (hash.rotate_left(5) ^ ascii_lowercase_word(word)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        hash = (hash.rotate_left(5) ^ ascii_lowercase_word(u64::from_le_bytes(tail))).wrapping_mul(K);
    }
    hash
}

/// Lower-cases the ASCII letters among eight bytes at once.
#[inline]
fn ascii_lowercase_word(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x80 * ONES;
    let seven = word & (0x7f * ONES);
    // A byte's high bit is set where its low seven bits are >= 'A', and where they are > 'Z'.
    let at_least_a = seven + (0x80 - u64::from(b'A')) * ONES;
    let above_z = seven + (0x80 - u64::from(b'Z') - 1) * ONES;
    let upper = at_least_a & !above_z & !word & HIGH;
    word | (upper >> 2)
}

/// The length of a key's group in the key (`com.example` in
/// `com.example.www`); the whole key for a one-label key.
#[inline]
pub(crate) fn key_group_len(key: &[u8]) -> usize {
    match key.iter().position(|b| *b == b'.') {
        None => key.len(),
        Some(first_dot) => {
            key[first_dot + 1..].iter().position(|b| *b == b'.').map_or(key.len(), |at| first_dot + 1 + at)
        }
    }
}

/// What a key maps to (see "Keys and values" in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Value {
    pub(crate) blocks: u64,
    pub(crate) allows: u64,
    /// 1 + the index of the first source that listed exactly this key (0 = none).
    pub(crate) source_plus_one: u64,
}

/// Bytes per value table entry.
pub(crate) const VALUE_LEN: usize = 24;

/// A part's value table as written.
pub(crate) fn encode_values(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * VALUE_LEN);
    for value in values {
        for word in [value.blocks, value.allows, value.source_plus_one] {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
    out
}

fn decode_values(bytes: &[u8]) -> Result<Box<[Value]>, String> {
    if bytes.len() % VALUE_LEN != 0 {
        return Err(format!("a value table of {} bytes is not a whole number of entries", bytes.len()));
    }
    Ok(bytes
        .chunks_exact(VALUE_LEN)
        .map(|entry| Value {
            blocks: read_u64(entry, 0),
            allows: read_u64(entry, 8),
            source_plus_one: read_u64(entry, 16),
        })
        .collect())
}

impl Value {
    fn source(&self) -> Option<usize> {
        match self.source_plus_one {
            0 => None,
            n => Some(n as usize - 1),
        }
    }
}

/// FNV-1a, 64 bit: a stable hash for fingerprints and the header checksum
/// (std's hasher may change between Rust releases; these values are stored).
#[derive(Clone, Copy)]
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    pub(crate) fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    #[inline]
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// What went wrong building or opening a compiled list. Each message names
/// the file and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{path}: cannot {action} ({source}); {fix}")]
    Io {
        path: PathBuf,
        action: &'static str,
        fix: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a Hedgerow compiled list (wrong magic bytes); delete it and run `hedgerow lists compile`")]
    NotCompiledLists { path: PathBuf },
    #[error(
        "{path}: compiled list format {found}, but this Hedgerow reads format {expected}; run `hedgerow lists compile` to rebuild it"
    )]
    Version { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: the compiled list is corrupt or truncated ({why}); delete it and run `hedgerow lists compile`")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: cannot build the compiled list: {why}")]
    Build { path: PathBuf, why: String },
    #[error(transparent)]
    Sources(#[from] super::sources::SourceError),
}

impl ListError {
    pub(crate) fn io(path: &Path, action: &'static str, fix: &'static str, source: io::Error) -> ListError {
        ListError::Io { path: path.to_path_buf(), action, fix, source }
    }
}

/// One fst's bytes inside the mapped file.
struct Section {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Section {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

/// One level of a name that a list mentions, for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListMatch {
    /// The listed domain that matched (the query or one of its parents).
    pub domain: String,
    /// True when `domain` is the queried name itself.
    pub exact: bool,
    pub blocks: CategorySet,
    /// Categories with an exception (adblock `@@`) at this level.
    pub allows: CategorySet,
    /// The id of the first source that listed `domain`.
    pub source: Option<String>,
}

/// One part: an fst and its bloom filter.
struct Part {
    fst: Fst<Section>,
    /// Keyed by [`group_hash`].
    bloom: Option<Bloom<u64>>,
    /// What the fst's values index.
    values: Box<[Value]>,
}

/// The compiled lists: immutable, `Send + Sync`, cheap to share in an `Arc`.
pub struct CompiledLists {
    parts: Vec<Part>,
    /// Bucket -> index into `parts`.
    buckets: [u8; 256],
    /// Some name is a single label (a whole top-level domain). When none is,
    /// a group missing from the bloom filter means the name is not listed
    /// at any level.
    whole_tlds: bool,
    names: usize,
    sources: Vec<String>,
    fingerprint: u64,
    file_bytes: u64,
}

impl std::fmt::Debug for CompiledLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledLists")
            .field("names", &self.len())
            .field("sources", &self.sources)
            .field("parts", &self.parts.len())
            .field("bloom", &self.has_bloom())
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .field("file_bytes", &self.file_bytes)
            .finish()
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

impl CompiledLists {
    /// Maps a compiled list file, checking its magic bytes, format version,
    /// length and checksums. A wrong, old or damaged file is an error that
    /// says so; nothing here panics on bad bytes.
    pub fn open(path: &Path) -> Result<CompiledLists, ListError> {
        let corrupt = |why: String| ListError::Corrupt { path: path.to_path_buf(), why };
        let file = File::open(path).map_err(|error| {
            ListError::io(path, "open the compiled list", "run `hedgerow lists compile` to build it", error)
        })?;
        let actual_len = file
            .metadata()
            .map_err(|error| ListError::io(path, "read the compiled list's size", "check the file", error))?
            .len();
        if actual_len < MAGIC.len() as u64 {
            return Err(ListError::NotCompiledLists { path: path.to_path_buf() });
        }
        // SAFETY: Hedgerow never modifies a compiled list in place; a rebuild
        // renames a new file over it, leaving this mapping's inode intact.
        // Another program truncating the file under us could still fault; that
        // is outside what we can guard against with a read-only mapping.
        let map = unsafe { Mmap::map(&file) }.map_err(|error| {
            ListError::io(path, "memory-map the compiled list", "check free memory and the file", error)
        })?;
        let bytes: &[u8] = &map;
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(ListError::NotCompiledLists { path: path.to_path_buf() });
        }
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!("{} bytes, shorter than the {HEADER_LEN}-byte header", bytes.len())));
        }
        let header = Header::decode(bytes);
        let version = header.version;
        if version != FORMAT_VERSION {
            return Err(ListError::Version { path: path.to_path_buf(), found: version, expected: FORMAT_VERSION });
        }
        let flags = header.flags;
        let fingerprint = header.fingerprint;
        let names = header.names;
        let file_len = header.file_len;
        if file_len != bytes.len() as u64 {
            return Err(corrupt(format!("the header says {file_len} bytes but the file has {}", bytes.len())));
        }
        let whole_tlds = header.whole_tlds;
        let part_count = usize::from(header.parts);
        let section = |offset: u64, len: u64, what: &str| -> Result<(usize, usize), ListError> {
            match offset.checked_add(len) {
                Some(end) if offset >= HEADER_LEN as u64 && end <= file_len => Ok((offset as usize, end as usize)),
                _ => Err(corrupt(format!("the {what} ({offset}+{len}) lies outside the file"))),
            }
        };
        if part_count == 0 || part_count > 255 {
            return Err(corrupt(format!("{part_count} parts")));
        }
        let (sources_start, sources_end) = section(header.sources_at, header.sources_len, "source table")?;
        let (buckets_start, buckets_end) = section(header.buckets_at, 256, "bucket table")?;
        let (table_start, table_end) = section(header.table_at, (part_count * PART_ENTRY_LEN) as u64, "part table")?;
        let mut part_sections = Vec::with_capacity(part_count);
        for at in (table_start..table_end).step_by(PART_ENTRY_LEN) {
            let fst = section(read_u64(bytes, at), read_u64(bytes, at + 8), "fst")?;
            let bloom = match (read_u64(bytes, at + 16), read_u64(bytes, at + 24)) {
                (0, 0) => None,
                (offset, len) => Some(section(offset, len, "bloom filter")?),
            };
            let values = section(read_u64(bytes, at + 32), read_u64(bytes, at + 40), "value table")?;
            part_sections.push((fst, bloom, values));
        }

        let mut checksum = Fnv64::new();
        checksum.write(&bytes[..CHECKSUM_AT]);
        checksum.write(&[0; 8]);
        checksum.write(&bytes[CHECKSUM_AT + 8..HEADER_LEN]);
        checksum.write(&bytes[sources_start..sources_end]);
        checksum.write(&bytes[buckets_start..buckets_end]);
        checksum.write(&bytes[table_start..table_end]);
        for (_, bloom, _) in &part_sections {
            if let Some((start, end)) = bloom {
                checksum.write(&bytes[*start..*end]);
            }
        }
        for (_, _, (start, end)) in &part_sections {
            checksum.write(&bytes[*start..*end]);
        }
        if checksum.finish() != Header::checksum(bytes) {
            return Err(corrupt("the header checksum does not match".into()));
        }

        let sources = read_source_table(&bytes[sources_start..sources_end]).map_err(corrupt)?;
        let mut buckets = [0u8; 256];
        buckets.copy_from_slice(&bytes[buckets_start..buckets_end]);
        if buckets.iter().any(|part| usize::from(*part) >= part_count) {
            return Err(corrupt("the bucket table names a part that does not exist".into()));
        }
        let with_bloom = flags & FLAG_BLOOM != 0;
        let map = Arc::new(map);
        let mut parts = Vec::with_capacity(part_count);
        let mut keys = 0u64;
        for ((fst_start, fst_end), bloom, (values_start, values_end)) in part_sections {
            let values = decode_values(&map[values_start..values_end]).map_err(corrupt)?;
            let bloom = match (with_bloom, bloom) {
                (true, Some((start, end))) => Some(
                    Bloom::from_bytes(copy_to_huge_pages(&map[start..end]))
                        .map_err(|why| corrupt(format!("bad bloom filter: {why}")))?,
                ),
                (false, None) => None,
                _ => return Err(corrupt("a part's bloom filter is missing".into())),
            };
            let (hot, offset) = read_into_huge_pages(&file, fst_start, fst_end - fst_start).map_err(|error| {
                ListError::io(path, "read the compiled list into memory", "check free memory and the file", error)
            })?;
            let fst = Fst::new(Section { map: Arc::new(hot), start: offset, end: offset + (fst_end - fst_start) })
                .map_err(|error| corrupt(format!("bad fst: {error}")))?;
            // Reads every page once: a flipped bit anywhere is caught here
            // rather than as a wrong answer (or a panic inside fst) later.
            fst.verify().map_err(|error| corrupt(format!("bad fst: {error}")))?;
            keys += fst.len() as u64;
            parts.push(Part { fst, bloom, values });
        }
        if keys < names {
            return Err(corrupt(format!("the header says {names} names but the parts hold {keys}")));
        }
        Ok(CompiledLists {
            parts,
            buckets,
            whole_tlds,
            names: names as usize,
            sources,
            fingerprint,
            file_bytes: file_len,
        })
    }

    /// Lists that list nothing: what the server uses before any list exists.
    pub fn empty() -> CompiledLists {
        CompiledLists {
            parts: Vec::new(),
            buckets: [0; 256],
            whole_tlds: false,
            names: 0,
            sources: Vec::new(),
            fingerprint: 0,
            file_bytes: 0,
        }
    }

    /// The fingerprint of the inputs this was compiled from.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Number of listed names (keys).
    pub fn len(&self) -> usize {
        self.names
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Source ids in compile order.
    pub fn source_ids(&self) -> &[String] {
        &self.sources
    }

    /// Whether a bloom filter sits in front of the fst.
    pub fn has_bloom(&self) -> bool {
        self.parts.first().is_some_and(|part| part.bloom.is_some())
    }

    /// How many parts the list was built in (see the module docs).
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Size of the mapped file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// HOT PATH. The categories that list `name` or any parent of it, with
    /// exceptions applied: walking from the top-level domain down, each level
    /// adds the categories that block it and removes those with an exception
    /// there, so an exception beats a block at its own level or above and a
    /// more specific block beats an exception.
    ///
    /// `name` is dotted (`www.example.com`); upper case and one trailing dot
    /// are tolerated. Does not allocate.
    pub fn lookup(&self, name: &[u8]) -> CategorySet {
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.iter().any(u8::is_ascii_uppercase) {
            return self.lookup_uppercase(name);
        }
        self.lookup_lowercase(name)
    }

    /// [`lookup`](Self::lookup) of a name with capitals (the DNS path passes
    /// lower case, so this is rare): lowers it into a buffer first.
    #[cold]
    fn lookup_uppercase(&self, name: &[u8]) -> CategorySet {
        let mut lowered = [0u8; 256];
        self.lookup_lowercase(clean(name, &mut lowered))
    }

    #[inline]
    fn lookup_lowercase(&self, name: &[u8]) -> CategorySet {
        let hash = group_hash(&name[group_start(name)..]);
        let Some(part) = self.part_for(hash) else {
            return CategorySet::EMPTY;
        };
        let mut levels = usize::MAX;
        if let Some(bloom) = &part.bloom
            && name.len() <= 256
            && !bloom.check(&hash)
        {
            // No name in this group is listed, so at most a whole top-level
            // domain can be (and usually none is).
            if !self.whole_tlds {
                return CategorySet::EMPTY;
            }
            levels = 1;
        }
        let mut result = 0u64;
        walk(&part.fst, name, levels, |_, index| {
            if let Some(value) = part.values.get(index as usize) {
                result = (result | value.blocks) & !value.allows;
            }
        });
        CategorySet(result)
    }

    /// The part holding every level of a name whose group has `group_hash`
    /// (None for the empty list).
    #[inline]
    fn part_for(&self, group_hash: u64) -> Option<&Part> {
        match self.parts.len() {
            0 => None,
            1 => self.parts.first(),
            _ => self.parts.get(usize::from(self.buckets[usize::from(bucket_of_hash(group_hash))])),
        }
    }

    /// Slow path for `hedgerow check` and logs: every level of `name` that a
    /// list mentions, most specific first.
    pub fn explain(&self, name: &[u8]) -> Vec<ListMatch> {
        let mut lowered = [0u8; 256];
        let name = clean(name, &mut lowered);
        let Some(part) = self.part_for(group_hash(&name[group_start(name)..])) else {
            return Vec::new();
        };
        let mut matches = Vec::new();
        walk(&part.fst, name, usize::MAX, |start, index| {
            let value = part.values.get(index as usize).copied().unwrap_or_default();
            matches.push(ListMatch {
                domain: String::from_utf8_lossy(&name[start..]).into_owned(),
                exact: start == 0,
                blocks: CategorySet(value.blocks),
                allows: CategorySet(value.allows),
                source: value.source().and_then(|index| self.sources.get(index).cloned()),
            });
        });
        matches.reverse();
        matches
    }
}

/// Reads `len` bytes (an fst) at `at` in `file` into anonymous memory that
/// starts on a 2 MiB boundary, advised to be backed by 2 MiB pages. Returns
/// the mapping and where the fst starts in it.
///
/// Why not use the file's own mapping: a lookup walks a dozen nodes spread
/// over tens of megabytes, and with 4 KiB pages each is a TLB miss too,
/// which in a virtual machine costs a two-level page walk. On the 5M-name
/// benchmark this cut an unlisted-name lookup from about 345 ns to 220-260
/// ns, and one without the bloom filter from about 1,000 to 800 ns. Read,
/// not copied from a mapping, so a reload holds the old and new lists and
/// nothing else (the file's pages stay in the page cache, outside our RSS).
fn read_into_huge_pages(file: &File, at: usize, len: usize) -> io::Result<(Mmap, usize)> {
    use std::os::unix::fs::FileExt;
    const HUGE: usize = 2 << 20;
    let mut anon = memmap2::MmapOptions::new().len(len + HUGE).map_anon()?;
    let offset = (anon.as_ptr() as usize).next_multiple_of(HUGE) - anon.as_ptr() as usize;
    let whole = len / HUGE * HUGE;
    if whole > 0 {
        // Best effort: without transparent huge pages this is plain memory.
        let _ = anon.advise_range(memmap2::Advice::HugePage, offset, whole);
    }
    file.read_exact_at(&mut anon[offset..offset + len], at as u64)?;
    Ok((anon.make_read_only()?, offset))
}

/// Copies `bytes` (a bloom filter: a miss reads one random cache line of
/// it, see [`read_into_huge_pages`] for why 2 MiB pages matter) into a heap
/// allocation backed by 2 MiB pages where the kernel allows. The `Vec` must
/// come from the global allocator (the crate owns it), so the capacity is
/// chosen for glibc: at least 32 MiB, above which glibc always serves an
/// allocation as a mapping of its own (smaller ones may come from the heap,
/// in pages already touched), and a whole number of 2 MiB, which Linux
/// places on a 2 MiB boundary. The spare capacity is address space only:
/// pages past the copy are never touched. The mapping is advised before the
/// copy first touches it. Best effort: elsewhere it is a plain copy.
fn copy_to_huge_pages(bytes: &[u8]) -> Vec<u8> {
    const HUGE: usize = 2 << 20;
    const PAGE: usize = 4096;
    // glibc's largest dynamic mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX).
    const ALWAYS_MAPPED: usize = 32 << 20;
    // glibc puts 16 bytes of chunk header in front of a mapped allocation.
    const CHUNK_HEADER: usize = 16;
    if bytes.len() < HUGE {
        return bytes.to_vec();
    }
    let wanted = bytes.len().max(ALWAYS_MAPPED) + CHUNK_HEADER;
    let mut copy = Vec::with_capacity(wanted.next_multiple_of(HUGE) - CHUNK_HEADER);
    let start = copy.as_ptr() as usize / PAGE * PAGE;
    let end = (copy.as_ptr() as usize + copy.capacity()).next_multiple_of(PAGE);
    // SAFETY: MADV_HUGEPAGE only changes how the pages of [start, end) are
    // backed, never their contents; the range is the allocation's own pages
    // (whole pages of a mapping, or of the heap around it if glibc chose the
    // heap, where the advice is equally harmless).
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    copy.extend_from_slice(bytes);
    copy
}

/// Lower-cases `name` into `buffer` and drops one trailing dot, when needed
/// and when it fits; returns the name to use.
fn clean<'a>(name: &'a [u8], buffer: &'a mut [u8; 256]) -> &'a [u8] {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.len() <= buffer.len() && name.iter().any(u8::is_ascii_uppercase) {
        let out = &mut buffer[..name.len()];
        for (to, from) in out.iter_mut().zip(name) {
            *to = from.to_ascii_lowercase();
        }
        return out;
    }
    name
}

/// Where the label ending at `end` starts.
#[inline]
fn label_start(name: &[u8], end: usize) -> usize {
    name[..end].iter().rposition(|b| *b == b'.').map_or(0, |dot| dot + 1)
}

/// Walks `name`'s reversed key through the fst in one pass, top-level label
/// first, for at most `levels` levels. At each label boundary where a key
/// ends, calls `at_level(start of that level in name, value)`: least
/// specific first. Stops at the first byte with no transition. A key only
/// ends at a whole label, so `notexample.com` never meets `example.com`.
#[inline]
fn walk(fst: &Fst<Section>, name: &[u8], levels: usize, mut at_level: impl FnMut(usize, u64)) {
    let mut node = fst.root();
    let mut output = Output::zero();
    let mut end = name.len();
    for level in 0..levels {
        let start = label_start(name, end);
        if level > 0 {
            let Some(index) = node.find_input(b'.') else {
                return;
            };
            let transition = node.transition(index);
            output = output.cat(transition.out);
            node = fst.node(transition.addr);
        }
        for byte in &name[start..end] {
            let Some(index) = node.find_input(byte.to_ascii_lowercase()) else {
                return;
            };
            let transition = node.transition(index);
            output = output.cat(transition.out);
            node = fst.node(transition.addr);
        }
        if node.is_final() {
            at_level(start, output.cat(node.final_output()).value());
        }
        if start == 0 {
            return;
        }
        end = start - 1;
    }
}

fn read_source_table(bytes: &[u8]) -> Result<Vec<String>, String> {
    let bad = || "the source id table is malformed".to_string();
    let count = bytes.get(..4).ok_or_else(bad)?;
    let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
    let mut at = 4;
    let mut ids = Vec::with_capacity(count.min(65_536));
    for _ in 0..count {
        let len = bytes.get(at..at + 2).ok_or_else(bad)?;
        let len = usize::from(u16::from_le_bytes(len.try_into().expect("2 bytes")));
        at += 2;
        let id = bytes.get(at..at + len).ok_or_else(bad)?;
        ids.push(String::from_utf8(id.to_vec()).map_err(|_| bad())?);
        at += len;
    }
    Ok(ids)
}

pub(crate) fn write_source_table(ids: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        let bytes = &id.as_bytes()[..id.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_pack_and_unpack() {
        let values = [
            Value { blocks: 0b101, allows: 0b10, source_plus_one: 7 },
            Value { blocks: 1 << 63, allows: 0, source_plus_one: 0 },
        ];
        let decoded = decode_values(&encode_values(&values)).unwrap();
        assert_eq!(&decoded[..], &values);
        assert_eq!(decoded[0].source(), Some(6));
        assert_eq!(decoded[1].source(), None);
        assert!(decode_values(&[0; VALUE_LEN + 1]).is_err());
    }

    #[test]
    fn the_empty_list_lists_nothing() {
        let lists = CompiledLists::empty();
        assert!(lists.is_empty());
        assert_eq!(lists.lookup(b"example.com"), CategorySet::EMPTY);
        assert!(lists.explain(b"example.com").is_empty());
    }

    #[test]
    fn source_table_round_trip() {
        let bytes = write_source_table(&["a", "ut1-gambling"]);
        assert_eq!(read_source_table(&bytes).unwrap(), ["a", "ut1-gambling"]);
        assert!(read_source_table(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn groups_of_names_and_keys_agree() {
        for (name, key, group) in [
            (&b"www.example.com"[..], &b"com.example.www"[..], &b"example.com"[..]),
            (b"example.com", b"com.example", b"example.com"),
            (b"a.b.c.example.co.uk", b"uk.co.example.c.b.a", b"co.uk"),
            (b"com", b"com", b"com"),
        ] {
            assert_eq!(&name[group_start(name)..], group);
            let mut forward = Vec::new();
            crate::name::push_reversed(&key[..key_group_len(key)], &mut forward);
            assert_eq!(forward, group);
        }
        assert_eq!(bucket_of_group(b"Example.COM"), bucket_of_group(b"example.com"));
    }

    #[test]
    fn lowercases_every_byte_value_in_every_position() {
        for byte in 0..=255u8 {
            for position in 0..8 {
                let mut bytes = [b'a'; 8];
                bytes[position] = byte;
                let mut expected = bytes;
                expected.make_ascii_lowercase();
                let got = ascii_lowercase_word(u64::from_le_bytes(bytes)).to_le_bytes();
                assert_eq!(got, expected, "byte {byte:#04x} at {position}");
            }
        }
    }

    #[test]
    fn groups_spread_evenly_over_buckets() {
        let mut counts = [0u32; BUCKETS];
        for i in 0..255_000u32 {
            let group = format!("site{i}.com");
            let bucket = usize::from(bucket_of_group(group.as_bytes()));
            assert!(bucket < BUCKETS);
            counts[bucket] += 1;
        }
        // 1,000 expected per bucket.
        let (least, most) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*least > 850 && *most < 1_150, "buckets from {least} to {most}");
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CompiledLists>();
    }
}
