//! Text lists -> one compiled list file (see [`super::compiled`] for the
//! layout).
//!
//! Steps: read each source (a large file in chunks on several threads) into
//! one arena of reversed names and 16-byte [`Entry`]s pointing into it; split
//! the entries into parts by name group; then on one thread per part sort,
//! merge duplicate keys, and build the part's fst and bloom filter; finally
//! write the file.
//!
//! Memory: 24 bytes of entry plus the name per rule (twice the entries while
//! splitting into parts), not one heap string each: 5 million names peak at
//! a few hundred MB. Entries sort by a 16-byte key prefix held inline,
//! touching the arena only to break ties.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use bloomfilter::Bloom;
use fst::MapBuilder;

use super::compiled::{
    BUCKETS, FLAG_BLOOM, FORMAT_VERSION, Fnv64, HEADER_LEN, Header, ListError, PART_ENTRY_LEN, REPLICATED, Value,
    bucket_of_group, encode_values, group_hash, group_start, key_group_len, write_source_table,
};
use super::parse::{Format, MAX_BAD_EXAMPLES, RuleKind, parse_stream};
use crate::files;
use crate::name::push_reversed;
use crate::policy::category::MAX_CATEGORIES;

/// One list to compile.
#[derive(Debug, Clone)]
pub struct CompileInput {
    pub id: String,
    /// Bit index of the category.
    pub category: u8,
    pub format: Format,
    /// The file to parse: a path source, or the fetcher's downloaded copy.
    pub text: PathBuf,
}

/// What happened to one source.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceReport {
    pub id: String,
    /// Block rules read (before merging duplicates).
    pub names: usize,
    /// Exceptions (adblock `@@`) read.
    pub exceptions: usize,
    pub bad_lines: usize,
    pub bad_examples: Vec<(usize, String, String)>,
    /// Why the source was skipped (the build went on without it).
    pub error: Option<String>,
}

impl SourceReport {
    pub fn skipped(id: &str, error: String) -> SourceReport {
        SourceReport {
            id: id.to_string(),
            names: 0,
            exceptions: 0,
            bad_lines: 0,
            bad_examples: Vec::new(),
            error: Some(error),
        }
    }
}

/// What a compile produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompileReport {
    pub sources: Vec<SourceReport>,
    /// Distinct names in the compiled list.
    pub names: usize,
    pub file_bytes: u64,
    pub elapsed_ms: u64,
}

/// Build options; [`compile`] uses the defaults.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// False-positive rate of the bloom filter in front of the fst, or `None`
    /// for no bloom filter. Default 2%, with two hash functions (see
    /// `two_probe_bloom`): `benches/lookup.rs` measured it paying for itself
    /// on a mostly-miss query mix.
    pub bloom_false_positive_rate: Option<f64>,
    /// Parts to build in parallel (see [`super::compiled`]), or `None` to
    /// choose: one for small lists, else one per core (at most 8).
    pub parts: Option<usize>,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions { bloom_false_positive_rate: Some(0.02), parts: None }
    }
}

/// A fingerprint of the inputs: ids, categories, formats, file paths, and
/// each file's length and modification time, plus the file format version
/// and Hedgerow's version (parsing rules may change between releases). The
/// compiled file stores it, so a restart with unchanged inputs reuses it.
pub fn fingerprint(inputs: &[CompileInput]) -> u64 {
    let mut hash = Fnv64::new();
    hash.write(&FORMAT_VERSION.to_le_bytes());
    hash.write(env!("CARGO_PKG_VERSION").as_bytes());
    for input in inputs {
        hash.write(&[0xff]);
        hash.write(input.id.as_bytes());
        hash.write(&[0, input.category, input.format as u8, 0]);
        hash.write(input.text.as_os_str().as_encoded_bytes());
        match fs::metadata(&input.text) {
            Ok(meta) => {
                hash.write(&meta.len().to_le_bytes());
                let modified = meta.modified().ok().and_then(|time| time.duration_since(UNIX_EPOCH).ok());
                let (secs, nanos) = modified.map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
                hash.write(&secs.to_le_bytes());
                hash.write(&nanos.to_le_bytes());
            }
            Err(_) => hash.write(b"missing"),
        }
    }
    hash.finish()
}

/// Parses every input and writes the compiled list to `out` atomically (a
/// temporary file in the same folder, fsync, rename). A source that cannot
/// be read is reported and skipped; only failing to write `out` is an error.
pub fn compile(inputs: &[CompileInput], out: &Path) -> Result<CompileReport, ListError> {
    compile_with(inputs, out, &CompileOptions::default())
}

/// [`compile`] with options (benchmarks compare with and without the bloom).
pub fn compile_with(inputs: &[CompileInput], out: &Path, options: &CompileOptions) -> Result<CompileReport, ListError> {
    let started = Instant::now();
    let too_big = |why: String| ListError::Build { path: out.to_path_buf(), why };
    if inputs.len() >= usize::from(u16::MAX) {
        return Err(too_big(format!("{} sources; at most {} fit in a compiled list", inputs.len(), u16::MAX - 1)));
    }
    let total_bytes: u64 =
        inputs.iter().filter_map(|input| fs::metadata(&input.text).ok()).map(|meta| meta.len()).sum();
    if total_bytes > u64::from(u32::MAX) {
        return Err(too_big(format!("{total_bytes} bytes of list text; at most 4 GiB fit in one compile")));
    }
    let threads = match options.parts {
        Some(parts) => parts.clamp(1, MAX_PARTS),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_PARTS),
    };
    let fingerprint = fingerprint(inputs);
    let mut rules = Rules::default();
    let mut reports = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        let report = rules.read(index as u16, input, threads);
        match &report.error {
            Some(error) => tracing::warn!(source = %input.id, "list skipped: {error}"),
            None if report.bad_lines > 0 => tracing::warn!(
                source = %input.id,
                bad_lines = report.bad_lines,
                first = ?report.bad_examples.first(),
                "list has lines that cannot be used"
            ),
            None => {}
        }
        reports.push(report);
    }
    let parts = match options.parts {
        Some(parts) => parts.clamp(1, MAX_PARTS),
        None if rules.entries.len() < PARALLEL_FROM => 1,
        None => threads,
    };
    let built = rules.build(parts, options);
    let ids: Vec<&str> = inputs.iter().map(|input| input.id.as_str()).collect();
    let file_bytes = write_atomically(out, |file| write_file(file, &built, &ids, fingerprint))?;
    let report = CompileReport {
        sources: reports,
        names: built.names,
        file_bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    tracing::info!(
        names = report.names,
        file_bytes,
        parts,
        elapsed_ms = report.elapsed_ms,
        path = %out.display(),
        "lists compiled"
    );
    Ok(report)
}

/// Most parts (and threads) a compile uses.
const MAX_PARTS: usize = 8;
/// Below this many rules one part is built: threads would not pay.
const PARALLEL_FROM: usize = 100_000;
/// Files larger than this are parsed in chunks on several threads.
const CHUNKED_FROM: usize = 4 << 20;

/// One rule, 24 bytes. `prefix` is the first 16 bytes of the reversed name,
/// big-endian and zero-padded (names never contain a zero byte), so
/// comparing prefixes orders like comparing the names: most comparisons
/// while sorting never touch the arena.
#[derive(Clone, Copy)]
struct Entry {
    prefix: [u64; 2],
    offset: u32,
    len: u8,
    /// Category bit index, plus 0x80 for an exception.
    category: u8,
    source: u16,
}

const ALLOW_FLAG: u8 = 0x80;
const _: () = assert!(std::mem::size_of::<Entry>() == 24);

/// Every rule read so far: reversed names in one arena, entries pointing in.
#[derive(Default)]
struct Rules {
    arena: Vec<u8>,
    entries: Vec<Entry>,
    /// Each entry's bucket (see `compiled::bucket_of_group`), or `REPLICATED`.
    buckets: Vec<u8>,
}

/// What a chunk of one source yielded.
#[derive(Default)]
struct Counts {
    names: usize,
    exceptions: usize,
    lines: usize,
    bad_lines: usize,
    bad_examples: Vec<(usize, String, String)>,
}

/// One built part, ready to write.
struct BuiltPart {
    fst: Vec<u8>,
    bloom: Option<Vec<u8>>,
    /// The value table (see `compiled`'s "Keys and values").
    values: Vec<u8>,
    /// Distinct keys in this part, one-label keys included.
    keys: usize,
    /// Distinct one-label keys (held by every part).
    single_labels: usize,
}

/// Every part, and what the header needs.
struct Built {
    parts: Vec<BuiltPart>,
    buckets: [u8; 256],
    names: usize,
    /// Some name is a single label (a whole top-level domain).
    whole_tlds: bool,
    bloom: bool,
}

impl Rules {
    fn read(&mut self, source: u16, input: &CompileInput, threads: usize) -> SourceReport {
        let mut report = SourceReport {
            id: input.id.clone(),
            names: 0,
            exceptions: 0,
            bad_lines: 0,
            bad_examples: Vec::new(),
            error: None,
        };
        if usize::from(input.category) >= MAX_CATEGORIES {
            report.error = Some(format!("category bit {} is not a known category; source skipped", input.category));
            return report;
        }
        let text = match fs::read(&input.text) {
            Ok(text) => text,
            Err(error) => {
                report.error = Some(format!("cannot read {} ({error}); source skipped", input.text.display()));
                return report;
            }
        };
        let chunks =
            if text.len() >= CHUNKED_FROM && threads > 1 { split_lines(&text, threads) } else { vec![&text[..]] };
        let counts = if chunks.len() == 1 {
            vec![self.parse_chunk(&text, source, input)]
        } else {
            let results: Vec<(Rules, Counts)> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunks
                    .iter()
                    .map(|chunk| {
                        scope.spawn(move || {
                            let mut rules = Rules::default();
                            let counts = rules.parse_chunk(chunk, source, input);
                            (rules, counts)
                        })
                    })
                    .collect();
                handles.into_iter().map(|handle| handle.join().expect("a parser thread panicked")).collect()
            });
            let mut counts = Vec::with_capacity(results.len());
            for (rules, chunk_counts) in results {
                self.append(rules);
                counts.push(chunk_counts);
            }
            counts
        };
        let mut lines_before = 0;
        for chunk in counts {
            report.names += chunk.names;
            report.exceptions += chunk.exceptions;
            report.bad_lines += chunk.bad_lines;
            for (line, text, why) in chunk.bad_examples {
                if report.bad_examples.len() < MAX_BAD_EXAMPLES {
                    report.bad_examples.push((line + lines_before, text, why));
                }
            }
            lines_before += chunk.lines;
        }
        report
    }

    /// Parses one chunk of a source's text into these rules.
    fn parse_chunk(&mut self, text: &[u8], source: u16, input: &CompileInput) -> Counts {
        self.arena.reserve(text.len());
        self.entries.reserve(text.len() / 24);
        let mut counts = Counts::default();
        let parsed = parse_stream(text, input.format, |kind, name| {
            let offset = self.arena.len() as u32; // total text is checked to fit in u32
            push_reversed(name.as_bytes(), &mut self.arena);
            let key = &self.arena[offset as usize..];
            let mut prefix = [0u8; 16];
            let n = key.len().min(16);
            prefix[..n].copy_from_slice(&key[..n]);
            let category = match kind {
                RuleKind::Block => {
                    counts.names += 1;
                    input.category
                }
                RuleKind::Allow => {
                    counts.exceptions += 1;
                    input.category | ALLOW_FLAG
                }
            };
            self.entries.push(Entry {
                prefix: [
                    u64::from_be_bytes(prefix[..8].try_into().expect("8 bytes")),
                    u64::from_be_bytes(prefix[8..].try_into().expect("8 bytes")),
                ],
                offset,
                len: key.len() as u8, // normalise caps names at 253 bytes
                category,
                source,
            });
            self.buckets.push(if name.contains('.') {
                bucket_of_group(&name.as_bytes()[group_start(name.as_bytes())..])
            } else {
                REPLICATED
            });
        })
        .expect("reading from memory cannot fail");
        counts.lines = parsed.lines;
        counts.bad_lines = parsed.bad_lines;
        counts.bad_examples = parsed.bad_examples;
        counts
    }

    /// Moves another set of rules onto the end of this one.
    fn append(&mut self, other: Rules) {
        let base = self.arena.len() as u32;
        self.arena.extend_from_slice(&other.arena);
        drop(other.arena);
        self.buckets.extend_from_slice(&other.buckets);
        self.entries.extend(other.entries.into_iter().map(|entry| Entry { offset: entry.offset + base, ..entry }));
    }

    /// Splits the rules into `parts` by bucket, then sorts, merges and builds
    /// every part on its own thread.
    fn build(self, parts: usize, options: &CompileOptions) -> Built {
        let Rules { arena, entries, buckets } = self;
        let (mut by_part, ranges, buckets) = partition(entries, buckets, parts);
        let mut slices: Vec<&mut [Entry]> = Vec::with_capacity(parts);
        let mut rest = &mut by_part[..];
        for range in &ranges {
            let (head, tail) = rest.split_at_mut(range.len());
            slices.push(head);
            rest = tail;
        }
        let arena = &arena[..];
        let built: Vec<BuiltPart> = std::thread::scope(|scope| {
            let mut slices = slices.into_iter();
            let first = slices.next().expect("at least one part");
            let handles: Vec<_> = slices.map(|slice| scope.spawn(move || build_part(arena, slice, options))).collect();
            let mut built = vec![build_part(arena, first, options)];
            built.extend(handles.into_iter().map(|handle| handle.join().expect("a build thread panicked")));
            built
        });
        let single_labels = built.first().map_or(0, |part| part.single_labels);
        let keys: usize = built.iter().map(|part| part.keys).sum();
        let names = keys - single_labels * (built.len() - 1);
        Built {
            parts: built,
            buckets,
            names,
            whole_tlds: single_labels > 0,
            bloom: options.bloom_false_positive_rate.is_some(),
        }
    }
}

/// Splits `text` into about `count` pieces at line ends.
fn split_lines(text: &[u8], count: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::with_capacity(count);
    let mut rest = text;
    for remaining in (1..=count).rev() {
        if remaining == 1 || rest.is_empty() {
            pieces.push(rest);
            break;
        }
        let target = rest.len() / remaining;
        let cut = rest[target..].iter().position(|b| *b == b'\n').map_or(rest.len(), |at| target + at + 1);
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Orders entries by part (one-label keys copied into every part); returns
/// them, each part's range, and the bucket -> part table. Buckets go to
/// parts largest first, each to the emptiest part so far.
fn partition(
    entries: Vec<Entry>,
    bucket_of: Vec<u8>,
    parts: usize,
) -> (Vec<Entry>, Vec<std::ops::Range<usize>>, [u8; 256]) {
    let mut table = [0u8; 256];
    if parts == 1 {
        let len = entries.len();
        return (entries, std::iter::once(0..len).collect(), table);
    }
    let mut counts = [0usize; 256];
    for bucket in &bucket_of {
        counts[usize::from(*bucket)] += 1;
    }
    let replicated = counts[usize::from(REPLICATED)];
    let mut order: Vec<usize> = (0..BUCKETS).collect();
    order.sort_by_key(|bucket| std::cmp::Reverse(counts[*bucket]));
    let mut sizes = vec![replicated; parts];
    for bucket in order {
        let emptiest = (0..parts).min_by_key(|part| sizes[*part]).expect("parts > 0");
        table[bucket] = emptiest as u8;
        sizes[emptiest] += counts[bucket];
    }
    let mut starts = Vec::with_capacity(parts);
    let mut total = 0;
    for size in &sizes {
        starts.push(total);
        total += size;
    }
    let ranges: Vec<_> = starts.iter().zip(&sizes).map(|(start, size)| *start..start + size).collect();
    let mut cursor = starts;
    let placeholder = Entry { prefix: [0; 2], offset: 0, len: 0, category: 0, source: 0 };
    let mut out = vec![placeholder; total];
    for (entry, bucket) in entries.iter().zip(&bucket_of) {
        if *bucket == REPLICATED {
            for slot in cursor.iter_mut() {
                out[*slot] = *entry;
                *slot += 1;
            }
        } else {
            let part = usize::from(table[usize::from(*bucket)]);
            out[cursor[part]] = *entry;
            cursor[part] += 1;
        }
    }
    table[usize::from(REPLICATED)] = 0;
    (out, ranges, table)
}

/// Sorts one part's entries, merges duplicate keys, and builds its fst and
/// bloom filter in memory.
fn build_part(arena: &[u8], entries: &mut [Entry], options: &CompileOptions) -> BuiltPart {
    let key = |entry: &Entry| &arena[entry.offset as usize..entry.offset as usize + usize::from(entry.len)];
    entries.sort_unstable_by(|a, b| {
        a.prefix.cmp(&b.prefix).then_with(|| key(a)[16.min(a.len.into())..].cmp(&key(b)[16.min(b.len.into())..]))
    });

    // Distinct keys with their merged values, in key order.
    let merged = {
        let mut rest: &[Entry] = entries;
        std::iter::from_fn(move || {
            let (first, _) = rest.split_first()?;
            let first_key = key(first);
            let same = rest.iter().take_while(|entry| entry.prefix == first.prefix && key(entry) == first_key).count();
            let (group, tail) = rest.split_at(same);
            rest = tail;
            let (mut blocks, mut allows, mut source) = (0u64, 0u64, u16::MAX);
            for entry in group {
                let bit = 1u64 << (entry.category & !ALLOW_FLAG);
                if entry.category & ALLOW_FLAG == 0 {
                    blocks |= bit;
                } else {
                    allows |= bit;
                }
                source = source.min(entry.source);
            }
            Some((first_key, Value { blocks, allows, source_plus_one: u64::from(source) + 1 }))
        })
    };
    let (mut keys, mut single_labels) = (0usize, 0usize);
    // About 10 bytes of fst per key; reserving untouched capacity costs no memory.
    let mut builder = MapBuilder::new(Vec::with_capacity(entries.len() * 16)).expect("writing to memory cannot fail");
    // Each group's first key (offset, group length): the bloom filter holds
    // groups (see `CompiledLists::lookup`). Keys of a group sort together
    // nearly always, so comparing with the previous group finds them.
    let mut groups: Vec<(u32, u8)> = Vec::with_capacity(entries.len());
    let mut previous_group: &[u8] = &[];
    // Each distinct value once; the fst maps a key to its value's index.
    let mut values: Vec<Value> = Vec::new();
    let mut value_index: std::collections::HashMap<Value, u64> = std::collections::HashMap::new();
    for (key, value) in merged {
        let index = *value_index.entry(value).or_insert_with(|| {
            values.push(value);
            values.len() as u64 - 1
        });
        builder.insert(key, index).expect("keys are sorted and distinct");
        keys += 1;
        let group_len = key_group_len(key);
        single_labels += usize::from(group_len == key.len() && !key.contains(&b'.'));
        let group = &key[..group_len];
        if group != previous_group {
            let offset = key.as_ptr() as usize - arena.as_ptr() as usize;
            groups.push((offset as u32, group.len() as u8));
            previous_group = group;
        }
    }
    let bloom = options.bloom_false_positive_rate.map(|rate| {
        let mut bloom = two_probe_bloom(groups.len(), rate);
        let mut forward = Vec::with_capacity(256);
        for (offset, len) in groups {
            forward.clear();
            push_reversed(&arena[offset as usize..offset as usize + usize::from(len)], &mut forward);
            bloom.set(&group_hash(&forward));
        }
        bloom
    });
    BuiltPart {
        fst: builder.into_inner().expect("writing to memory cannot fail"),
        bloom: bloom.map(Bloom::into_bytes),
        values: encode_values(&values),
        keys,
        single_labels,
    }
}

/// A bloom filter for `items` with two hash functions and enough bits for
/// the false-positive `rate`. The usual choice (the fewest bits, about seven
/// hash functions at 1%) makes a miss touch two random cache lines on
/// average; with two hash functions the filter is sparse (about 14% of bits
/// set at 2%), so a miss almost always stops at the first probe: one cache
/// miss, two SipHash computations, for a few more bits per group.
fn two_probe_bloom(items: usize, rate: f64) -> Bloom<u64> {
    let items = items.max(1) as f64;
    let rate = rate.clamp(1e-6, 0.25);
    // rate = (1 - e^(-2n/m))^2  =>  m = -2n / ln(1 - sqrt(rate))
    let bits = (-2.0 * items / (1.0 - rate.sqrt()).ln()).ceil().max(64.0);
    let bytes = (bits / 8.0).ceil() as usize;
    // The crate picks k = round(m/n ln 2); tell it the item count that gives 2.
    let count_for_two = ((bytes * 8) as f64 * std::f64::consts::LN_2 / 2.0).floor().max(1.0) as usize;
    // A fixed seed keeps the output a function of the input.
    let bloom = Bloom::new_with_seed(bytes, count_for_two, &[0x5e; 32]).expect("a positive size");
    debug_assert_eq!(bloom.number_of_hash_functions(), 2);
    bloom
}

/// Writes the whole file; returns its length.
fn write_file(file: &mut File, built: &Built, ids: &[&str], fingerprint: u64) -> io::Result<u64> {
    let sources = write_source_table(ids);
    let parts = built.parts.len();
    let sources_at = HEADER_LEN as u64;
    let buckets_at = sources_at + sources.len() as u64;
    let table_at = buckets_at + 256;
    let mut at = table_at + (parts * PART_ENTRY_LEN) as u64;
    let mut table = Vec::with_capacity(parts * PART_ENTRY_LEN);
    let mut bloom_places = Vec::with_capacity(parts);
    for part in &built.parts {
        let bloom_len = part.bloom.as_ref().map_or(0, Vec::len) as u64;
        bloom_places.push(if bloom_len == 0 { (0, 0) } else { (at, bloom_len) });
        at += bloom_len;
    }
    let mut value_places = Vec::with_capacity(parts);
    for part in &built.parts {
        value_places.push((at, part.values.len() as u64));
        at += part.values.len() as u64;
    }
    for ((part, (bloom_at, bloom_len)), (values_at, values_len)) in
        built.parts.iter().zip(&bloom_places).zip(&value_places)
    {
        for value in [at, part.fst.len() as u64, *bloom_at, *bloom_len, *values_at, *values_len] {
            table.extend_from_slice(&value.to_le_bytes());
        }
        at += part.fst.len() as u64;
    }
    let file_len = at;

    let mut header = Header {
        version: FORMAT_VERSION,
        flags: if built.bloom { FLAG_BLOOM } else { 0 },
        fingerprint,
        names: built.names as u64,
        file_len,
        whole_tlds: built.whole_tlds,
        parts: parts as u16,
        sources_at,
        sources_len: sources.len() as u64,
        buckets_at,
        table_at,
    }
    .encode();
    let mut checksum = Fnv64::new();
    checksum.write(&header);
    checksum.write(&sources);
    checksum.write(&built.buckets);
    checksum.write(&table);
    for part in &built.parts {
        checksum.write(part.bloom.as_deref().unwrap_or_default());
    }
    for part in &built.parts {
        checksum.write(&part.values);
    }
    Header::set_checksum(&mut header, checksum.finish());

    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header)?;
    out.write_all(&sources)?;
    out.write_all(&built.buckets)?;
    out.write_all(&table)?;
    for part in &built.parts {
        out.write_all(part.bloom.as_deref().unwrap_or_default())?;
    }
    for part in &built.parts {
        out.write_all(&part.values)?;
    }
    for part in &built.parts {
        out.write_all(&part.fst)?;
    }
    out.flush()?;
    Ok(file_len)
}

/// Creates `out`'s folder and writes `out` with [`files::write_atomically`]:
/// readers see the old file or the new one, never half of one.
fn write_atomically<T>(out: &Path, write: impl FnOnce(&mut File) -> io::Result<T>) -> Result<T, ListError> {
    let folder = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&folder).map_err(|error| {
        ListError::io(&folder, "create the data folder", "check `data_dir` in the config and its permissions", error)
    })?;
    files::write_atomically(out, write).map_err(|error| {
        ListError::io(out, "write the compiled list", "check free disk space and the data folder's permissions", error)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::compiled::CompiledLists;
    use crate::policy::category::{CategorySet, index_of};

    fn input(dir: &Path, id: &str, category: &str, format: Format, text: &str) -> CompileInput {
        let path = dir.join(format!("{id}.txt"));
        fs::write(&path, text).unwrap();
        CompileInput { id: id.into(), category: index_of(category).unwrap(), format, text: path }
    }

    #[test]
    fn compiles_merges_and_looks_up() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = [
            input(dir.path(), "g", "gambling", Format::Domains, "bet.example\nsub.bet.example\n"),
            input(dir.path(), "a", "ads", Format::Adblock, "||bet.example^\n@@||ok.ads.example^\n||ads.example^\n"),
        ];
        let out = dir.path().join("lists.compiled");
        let report = compile(&inputs, &out).unwrap();
        assert_eq!(report.names, 4);
        assert_eq!(report.sources[1].exceptions, 1);
        let lists = CompiledLists::open(&out).unwrap();
        assert!(lists.has_bloom());
        let gambling = CategorySet::of(index_of("gambling").unwrap());
        let ads = CategorySet::of(index_of("ads").unwrap());
        assert_eq!(lists.lookup(b"bet.example"), gambling.union(ads));
        assert_eq!(lists.lookup(b"www.bet.example"), gambling.union(ads));
        assert_eq!(lists.lookup(b"x.ads.example"), ads);
        assert_eq!(lists.lookup(b"ok.ads.example"), CategorySet::EMPTY);
        assert_eq!(lists.lookup(b"a.ok.ads.example"), CategorySet::EMPTY);
        assert_eq!(lists.lookup(b"example"), CategorySet::EMPTY);
        assert_eq!(lists.lookup(b"notbet.example"), CategorySet::EMPTY);
        let explained = lists.explain(b"www.sub.bet.example");
        assert_eq!(explained.len(), 2);
        assert_eq!(explained[0].domain, "sub.bet.example");
        assert_eq!(explained[1].domain, "bet.example");
        assert_eq!(explained[1].source.as_deref(), Some("g"));
        assert!(!explained[1].exact);
    }

    #[test]
    fn a_missing_source_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = vec![input(dir.path(), "g", "gambling", Format::Domains, "bet.example\n")];
        inputs.push(CompileInput {
            id: "gone".into(),
            category: 0,
            format: Format::Domains,
            text: dir.path().join("nope.txt"),
        });
        let report = compile(&inputs, &dir.path().join("out")).unwrap();
        assert_eq!(report.names, 1);
        assert!(report.sources[1].error.as_deref().unwrap().contains("nope.txt"));
    }

    #[test]
    fn fingerprint_follows_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = [input(dir.path(), "g", "gambling", Format::Domains, "bet.example\n")];
        let before = fingerprint(&inputs);
        assert_eq!(before, fingerprint(&inputs));
        fs::write(&inputs[0].text, "bet.example\nmore.example\n").unwrap();
        assert_ne!(before, fingerprint(&inputs));
    }
}
