//! Text lists -> one compiled list file (see [`super::compiled`] for the
//! layout).
//!
//! Memory: every rule becomes 16 bytes of [`Entry`] plus its reversed name in
//! one shared arena, so 5 million names cost about 200 MB at the peak, not
//! one heap string each. Entries sort by an 8-byte key prefix held inline,
//! touching the arena only to break ties.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use bloomfilter::Bloom;
use fst::MapBuilder;

use super::compiled::{
    CHECKSUM_AT, FLAG_BLOOM, FORMAT_VERSION, Fnv64, HEADER_LEN, ListError, MAGIC, encode_value, write_source_table,
};
use super::normalise::push_reversed;
use super::parse::{Format, MAX_BAD_EXAMPLES, RuleKind, parse_stream};
use crate::policy::category::CATEGORIES;

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
    /// for no bloom filter. Default 1%: `benches/lookup.rs` measured it
    /// paying for itself on a mostly-miss query mix.
    pub bloom_false_positive_rate: Option<f64>,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions { bloom_false_positive_rate: Some(0.01) }
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
    if inputs.len() >= usize::from(u16::MAX) {
        return Err(ListError::Build {
            path: out.to_path_buf(),
            why: format!("{} sources; at most {} fit in a compiled list", inputs.len(), u16::MAX - 1),
        });
    }
    let fingerprint = fingerprint(inputs);
    let mut rules = Rules::default();
    let mut reports = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        let report = rules.read(index as u16, input);
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
    if rules.arena.len() > u32::MAX as usize {
        return Err(ListError::Build { path: out.to_path_buf(), why: "more than 4 GB of names".into() });
    }
    eprintln!("TIMING parse {:?}", started.elapsed());
    rules.sort();
    eprintln!("TIMING sorted {:?}", started.elapsed());

    let ids: Vec<&str> = inputs.iter().map(|input| input.id.as_str()).collect();
    let (names, file_bytes) = write_atomically(out, |file| write_file(file, &rules, &ids, fingerprint, options))?;
    eprintln!("TIMING written {:?}", started.elapsed());
    let report =
        CompileReport { sources: reports, names, file_bytes, elapsed_ms: started.elapsed().as_millis() as u64 };
    tracing::info!(names, file_bytes, elapsed_ms = report.elapsed_ms, path = %out.display(), "lists compiled");
    Ok(report)
}

/// One rule, 16 bytes. `prefix` is the first 8 bytes of the reversed name,
/// big-endian and zero-padded (names never contain a zero byte), so
/// comparing prefixes orders like comparing the names.
#[derive(Clone, Copy)]
struct Entry {
    prefix: u64,
    offset: u32,
    len: u8,
    /// Category bit index, plus 0x80 for an exception.
    category: u8,
    source: u16,
}

const ALLOW_FLAG: u8 = 0x80;

#[derive(Default)]
struct Rules {
    arena: Vec<u8>,
    entries: Vec<Entry>,
}

impl Rules {
    fn key(&self, entry: &Entry) -> &[u8] {
        let start = entry.offset as usize;
        &self.arena[start..start + usize::from(entry.len)]
    }

    fn read(&mut self, source: u16, input: &CompileInput) -> SourceReport {
        let mut report = SourceReport::skipped(&input.id, String::new());
        report.error = None;
        if usize::from(input.category) >= CATEGORIES.len() {
            report.error = Some(format!("category bit {} is not a known category", input.category));
            return report;
        }
        let file = match File::open(&input.text) {
            Ok(file) => file,
            Err(error) => {
                report.error = Some(format!("cannot read {} ({error}); source skipped", input.text.display()));
                return report;
            }
        };
        let before = self.entries.len();
        let arena_before = self.arena.len();
        let (mut names, mut exceptions) = (0, 0);
        let parsed = parse_stream(BufReader::with_capacity(1 << 16, file), input.format, |kind, name| {
            let offset = self.arena.len() as u32;
            push_reversed(name.as_bytes(), &mut self.arena);
            let key = &self.arena[offset as usize..];
            let mut prefix = [0u8; 8];
            let n = key.len().min(8);
            prefix[..n].copy_from_slice(&key[..n]);
            let category = match kind {
                RuleKind::Block => {
                    names += 1;
                    input.category
                }
                RuleKind::Allow => {
                    exceptions += 1;
                    input.category | ALLOW_FLAG
                }
            };
            self.entries.push(Entry {
                prefix: u64::from_be_bytes(prefix),
                offset,
                len: key.len() as u8, // normalise caps names at 253 bytes
                category,
                source,
            });
        });
        match parsed {
            Ok(parsed) => {
                report.names = names;
                report.exceptions = exceptions;
                report.bad_lines = parsed.bad_lines;
                report.bad_examples = parsed.bad_examples;
                debug_assert!(report.bad_examples.len() <= MAX_BAD_EXAMPLES);
            }
            Err(error) => {
                // A read error part-way: drop what this source added.
                self.entries.truncate(before);
                self.arena.truncate(arena_before);
                report.error = Some(format!("cannot read {} ({error}); source skipped", input.text.display()));
            }
        }
        report
    }

    fn sort(&mut self) {
        let Rules { arena, entries } = self;
        let key = |entry: &Entry| {
            let start = entry.offset as usize;
            &arena[start..start + usize::from(entry.len)]
        };
        entries.sort_unstable_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| key(a).cmp(key(b))));
    }

    /// Distinct keys with their merged values, in key order.
    fn merged(&self) -> impl Iterator<Item = (&[u8], u64)> {
        let mut rest = self.entries.as_slice();
        std::iter::from_fn(move || {
            let (first, _) = rest.split_first()?;
            let key = self.key(first);
            let same = rest.iter().take_while(|entry| entry.prefix == first.prefix && self.key(entry) == key).count();
            let (group, tail) = rest.split_at(same);
            rest = tail;
            let (mut blocks, mut allows, mut source) = (0u32, 0u32, u16::MAX);
            for entry in group {
                let bit = 1u32 << (entry.category & !ALLOW_FLAG);
                if entry.category & ALLOW_FLAG == 0 {
                    blocks |= bit;
                } else {
                    allows |= bit;
                }
                source = source.min(entry.source);
            }
            Some((key, encode_value(blocks, allows, source + 1)))
        })
    }
}

fn labels(key: &[u8]) -> u8 {
    (key.iter().filter(|b| **b == b'.').count() + 1).min(255) as u8
}

/// Writes the whole file; returns (distinct names, file length).
fn write_file(
    file: &mut File,
    rules: &Rules,
    ids: &[&str],
    fingerprint: u64,
    options: &CompileOptions,
) -> io::Result<(usize, u64)> {
    // One pass for the counts the header and bloom need.
    let (mut names, mut min_labels, mut max_labels) = (0usize, u8::MAX, 0u8);
    for (key, _) in rules.merged() {
        names += 1;
        let n = labels(key);
        min_labels = min_labels.min(n);
        max_labels = max_labels.max(n);
    }
    if names == 0 {
        min_labels = 0;
    }
    let t0 = Instant::now();
    eprintln!("TIMING counted");
    let sources = write_source_table(ids);
    let mut bloom = match options.bloom_false_positive_rate {
        Some(rate) if names > 0 => {
            // A fixed seed keeps the output a function of the input.
            let seed = [0x5eu8; 32];
            Some(Bloom::<[u8]>::new_for_fp_rate_with_seed(names, rate, &seed).map_err(io::Error::other)?)
        }
        _ => None,
    };

    // Header (patched at the end), source table, then the fst streamed out.
    let mut out = BufWriter::with_capacity(1 << 20, &mut *file);
    out.write_all(&[0u8; HEADER_LEN])?;
    out.write_all(&sources)?;
    let fst_offset = (HEADER_LEN + sources.len()) as u64;
    let mut builder = MapBuilder::new(&mut out).map_err(io::Error::other)?;
    let mut forward = Vec::with_capacity(256);
    for (key, value) in rules.merged() {
        builder.insert(key, value).map_err(io::Error::other)?;
        if let Some(bloom) = &mut bloom {
            forward.clear();
            push_reversed(key, &mut forward); // reversing again gives the name as written
            bloom.set(&forward);
        }
    }
    builder.finish().map_err(io::Error::other)?;
    eprintln!("TIMING fst built {:?}", t0.elapsed());
    let bloom_offset = out.stream_position()?;
    let fst_len = bloom_offset - fst_offset;
    let bloom_bytes = bloom.as_ref().map(|bloom| bloom.as_slice()).unwrap_or_default();
    out.write_all(bloom_bytes)?;
    let file_len = out.stream_position()?;
    out.flush()?;
    drop(out);

    let mut header = [0u8; HEADER_LEN];
    header[..16].copy_from_slice(&MAGIC);
    header[16..20].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags = if bloom.is_some() { FLAG_BLOOM } else { 0 };
    header[20..24].copy_from_slice(&flags.to_le_bytes());
    header[24..32].copy_from_slice(&fingerprint.to_le_bytes());
    header[32..40].copy_from_slice(&(names as u64).to_le_bytes());
    let sections = [
        (HEADER_LEN as u64, sources.len() as u64),
        if bloom.is_some() { (bloom_offset, bloom_bytes.len() as u64) } else { (0, 0) },
        (fst_offset, fst_len),
    ];
    for (i, (offset, len)) in sections.iter().enumerate() {
        let at = 40 + i * 16;
        header[at..at + 8].copy_from_slice(&offset.to_le_bytes());
        header[at + 8..at + 16].copy_from_slice(&len.to_le_bytes());
    }
    header[88..96].copy_from_slice(&file_len.to_le_bytes());
    header[96] = min_labels;
    header[97] = max_labels;
    let mut checksum = Fnv64::new();
    checksum.write(&header);
    checksum.write(&sources);
    checksum.write(bloom_bytes);
    header[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&checksum.finish().to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    Ok((names, file_len))
}

/// Writes through a temporary file next to `out`, fsyncs it, renames it over
/// `out` and fsyncs the folder: readers see the old file or the new one,
/// never half of one.
fn write_atomically<T>(out: &Path, write: impl FnOnce(&mut File) -> io::Result<T>) -> Result<T, ListError> {
    let folder = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&folder).map_err(|error| {
        ListError::io(&folder, "create the data folder", "check `data_dir` in the config and its permissions", error)
    })?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "lists".into());
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = folder.join(format!(".{name}.{}.{unique}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&temporary)?;
        let value = write(&mut file)?;
        file.sync_all()?;
        fs::rename(&temporary, out)?;
        if let Ok(dir) = File::open(&folder) {
            let _ = dir.sync_all(); // best effort: not every platform can fsync a folder
        }
        Ok(value)
    })();
    result.map_err(|error: io::Error| {
        let _ = fs::remove_file(&temporary);
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
