//! cache: upstream answers kept for their TTL, bounded in entries and in
//! bytes, with negative caching (RFC 2308) and serve-stale (RFC 8767).
//!
//! The byte bound (`cache.memory_mb`) matters because answers differ in size
//! by a thousand times: a client asking for many names with 16 KB TXT answers
//! would otherwise fill an entry-bounded cache with gigabytes. Each entry is
//! weighed once, when stored, at its estimated real size (the records, their
//! encoded copy, the key and bookkeeping), but never less than
//! `memory_bytes / size`, so `cache.size` still caps the number of entries.
//!
//! The cache sits after the policy stages, so it holds upstream answers that
//! are the same for every group; policy is applied before it is consulted.
//! Entries stay after they expire (until evicted by size) so that when every
//! upstream fails the pipeline can still answer from a stale copy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RData, Record, RecordType};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::answer::UpstreamAnswer;
use super::wire::WireAnswer;
use crate::config::CacheSettings;

/// TTL given to stale answers (RFC 8767 section 4 recommends 30 seconds).
pub const STALE_ANSWER_TTL: u32 = 30;

/// What is cached is keyed by the question, plus the DO bit, since a DNSSEC-
/// aware client gets RRSIGs that others do not. The key is plain bytes (DO,
/// type, lower-case wire name) built on the stack, so a lookup hashes and
/// compares bytes and allocates nothing.
#[derive(Clone)]
pub struct CacheKey {
    len: usize,
    bytes: [u8; 3 + 255],
}

impl CacheKey {
    pub fn new(name: &LowerName, record_type: RecordType, dnssec_ok: bool) -> CacheKey {
        let mut key = CacheKey { len: 3, bytes: [0; 3 + 255] };
        key.bytes[0] = u8::from(dnssec_ok);
        key.bytes[1..3].copy_from_slice(&u16::from(record_type).to_be_bytes());
        for label in name.iter() {
            let end = key.len + 1 + label.len();
            if end >= key.bytes.len() {
                break; // cannot happen for a valid name (at most 255 bytes)
            }
            key.bytes[key.len] = label.len() as u8;
            key.bytes[key.len + 1..end].copy_from_slice(label);
            key.bytes[key.len + 1..end].make_ascii_lowercase();
            key.len = end;
        }
        key
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A cached answer, its records carrying the TTLs they had when stored, and
/// the same records pre-encoded for the wire.
#[derive(Debug)]
pub struct CachedAnswer {
    answer: UpstreamAnswer,
    wire: Option<WireAnswer>,
    stored_at: Instant,
    fresh_until: Instant,
    stale_until: Instant,
    /// What the entry counts against `cache.memory_mb`, fixed when stored.
    weight: u64,
    /// True when the answer holds a CNAME, so answer inspection has work:
    /// a cache hit without one never touches the records (a cold read per
    /// hit, about 2% of a core on the load bed).
    aliased: bool,
    /// RFC 8767 failure recheck: when a refresh of this (stale) answer last
    /// failed, in milliseconds after `stored_at` plus one; 0 for never.
    refresh_failed: AtomicU32,
}

impl CachedAnswer {
    /// Estimated bytes this entry holds: its own struct, the records (each a
    /// `Record` plus its heap data, estimated by its encoded length, which a
    /// record's names and rdata never fall far below), the encoded copy with
    /// its TTL offsets, and the key.
    fn estimated_size(&self, key_len: usize) -> u64 {
        let records = self.answer.answers.capacity() + self.answer.authorities.capacity();
        let (encoded, ttls) = self.wire.as_ref().map_or((0, 0), |wire| (wire.records_capacity(), wire.ttls_capacity()));
        // Without an encoded copy, estimate the records' heap data as 512 bytes each.
        let record_data = if self.wire.is_some() { encoded } else { records * 512 };
        let bytes = ENTRY_OVERHEAD
            + std::mem::size_of::<CachedAnswer>()
            + key_len
            + records * std::mem::size_of::<Record>()
            + record_data
            + encoded
            + ttls * std::mem::size_of::<(u32, u32)>();
        bytes as u64
    }

    /// The pre-encoded answer (None only if encoding failed, which then
    /// sends the query down the general path).
    pub fn wire(&self) -> Option<&WireAnswer> {
        self.wire.as_ref()
    }

    /// Whole seconds since the answer was stored, for the TTL countdown.
    pub fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored_at).as_secs()).unwrap_or(u32::MAX)
    }

    /// The upstream answer as stored (TTLs not counted down).
    pub fn stored(&self) -> &UpstreamAnswer {
        &self.answer
    }

    /// The answer records answer inspection must see: none when the answer
    /// holds no CNAME (known when stored, so a hit reads nothing more).
    pub fn records_to_inspect(&self) -> &[Record] {
        if self.aliased { &self.answer.answers } else { &[] }
    }

    /// The answer as it should be sent at `now`, TTLs counted down; a stale
    /// answer gets the short RFC 8767 TTL.
    pub fn answer_at(&self, now: Instant) -> UpstreamAnswer {
        let age = self.age(now);
        let stale = now >= self.fresh_until;
        let adjust = |records: &[Record]| -> Vec<Record> {
            records
                .iter()
                .map(|record| {
                    let mut record = record.clone();
                    record.ttl = if stale { STALE_ANSWER_TTL } else { record.ttl.saturating_sub(age) };
                    record
                })
                .collect()
        };
        UpstreamAnswer {
            response_code: self.answer.response_code,
            answers: adjust(&self.answer.answers),
            authorities: adjust(&self.answer.authorities),
        }
    }

    /// Notes that refreshing this answer from upstream failed at `now`.
    pub fn note_failed_refresh(&self, now: Instant) {
        let millis = now.saturating_duration_since(self.stored_at).as_millis().saturating_add(1);
        self.refresh_failed.store(u32::try_from(millis).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// When refreshing this answer last failed, if it has.
    pub fn refresh_failed_at(&self) -> Option<Instant> {
        match self.refresh_failed.load(Ordering::Relaxed) {
            0 => None,
            millis => Some(self.stored_at + Duration::from_millis(u64::from(millis - 1))),
        }
    }
}

/// The result of a cache lookup.
pub enum CacheLookup {
    Fresh(Arc<CachedAnswer>),
    /// Expired but within the serve-stale window: ask upstream, and use this
    /// only if upstream fails.
    Stale(Arc<CachedAnswer>),
    Miss,
}

/// Per-entry cost outside the entry itself: the `Arc`'s counts, the boxed
/// key's pointer and length, and quick_cache's slot and hash-table entry.
const ENTRY_OVERHEAD: usize = 96;

/// Reads the weight fixed when the entry was stored (no work per lookup).
#[derive(Clone)]
struct EntryWeight;

impl Weighter<Box<[u8]>, Arc<CachedAnswer>> for EntryWeight {
    fn weight(&self, _key: &Box<[u8]>, entry: &Arc<CachedAnswer>) -> u64 {
        entry.weight
    }
}

pub struct AnswerCache {
    entries: Cache<Box<[u8]>, Arc<CachedAnswer>, EntryWeight>,
    settings: CacheSettings,
    /// The least an entry weighs: `memory_bytes / size`, so that `size`
    /// entries of ordinary answers fill the cache and no more fit.
    min_weight: u64,
}

impl AnswerCache {
    pub fn new(settings: &CacheSettings) -> AnswerCache {
        let capacity = settings.memory_bytes.max(1) as u64;
        let min_weight = (capacity / settings.size.max(1) as u64).max(1);
        AnswerCache {
            entries: Cache::with_weighter(settings.size, capacity, EntryWeight),
            settings: settings.clone(),
            min_weight,
        }
    }

    pub fn get(&self, key: &CacheKey, now: Instant) -> CacheLookup {
        match self.entries.get(key.as_slice()) {
            Some(entry) if now < entry.fresh_until => CacheLookup::Fresh(entry),
            Some(entry) if now < entry.stale_until => CacheLookup::Stale(entry),
            Some(_) => {
                self.entries.remove(key.as_slice());
                CacheLookup::Miss
            }
            None => CacheLookup::Miss,
        }
    }

    /// Stores an upstream answer for as long as its records allow.
    pub fn insert(
        &self,
        key: &CacheKey,
        name: &LowerName,
        record_type: RecordType,
        answer: UpstreamAnswer,
        now: Instant,
    ) {
        let Some(ttl) = self.ttl_of(&answer) else {
            return;
        };
        let fresh_until = now + ttl;
        let wire = WireAnswer::encode(name, record_type, &answer);
        let aliased = answer.answers.iter().any(|record| matches!(record.data, RData::CNAME(_)));
        let mut entry = CachedAnswer {
            aliased,
            answer,
            wire,
            stored_at: now,
            fresh_until,
            stale_until: fresh_until + self.settings.serve_stale_for,
            weight: 0,
            refresh_failed: AtomicU32::new(0),
        };
        entry.weight = entry.estimated_size(key.len).max(self.min_weight);
        self.entries.insert(Box::from(key.as_slice()), Arc::new(entry));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The estimated bytes held by the cached answers now (never above
    /// `cache.memory_mb`).
    pub fn weight(&self) -> u64 {
        self.entries.weight()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How long a query holding a stale answer waits for upstream before it
    /// is answered stale (RFC 8767's client response timer).
    pub fn stale_answer_after(&self) -> Duration {
        self.settings.stale_answer_after
    }

    /// How long an answer stays fresh: the smallest TTL in the answer for a
    /// positive answer; for NXDOMAIN/NODATA the SOA's TTL capped by its
    /// MINIMUM field (RFC 2308 section 5). `None`: do not cache.
    fn ttl_of(&self, answer: &UpstreamAnswer) -> Option<Duration> {
        let seconds = match answer.response_code {
            ResponseCode::NoError if !answer.answers.is_empty() => answer.answers.iter().map(|r| r.ttl).min()?,
            ResponseCode::NoError | ResponseCode::NXDomain => {
                let soa = answer.authorities.iter().find(|r| r.record_type() == RecordType::SOA)?;
                let RData::SOA(data) = &soa.data else {
                    return None;
                };
                let negative = Duration::from_secs(u64::from(soa.ttl.min(data.minimum)));
                return Some(negative.min(self.settings.negative_max_ttl));
            }
            _ => return None,
        };
        let ttl = Duration::from_secs(u64::from(seconds));
        Some(ttl.clamp(self.settings.min_ttl, self.settings.max_ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, SOA};

    fn settings() -> CacheSettings {
        CacheSettings {
            size: 100,
            memory_bytes: 64 * 1024 * 1024,
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(86_400),
            negative_max_ttl: Duration::from_secs(3_600),
            serve_stale_for: Duration::from_secs(600),
            stale_answer_after: Duration::from_millis(400),
        }
    }

    fn name(name: &str) -> LowerName {
        LowerName::from(Name::from_ascii(name).unwrap())
    }

    fn name_of(text: &str) -> LowerName {
        name(text)
    }

    fn key(text: &str) -> CacheKey {
        CacheKey::new(&name(text), RecordType::A, false)
    }

    fn insert(cache: &AnswerCache, text: &str, answer: UpstreamAnswer, now: Instant) {
        cache.insert(&key(text), &name(text), RecordType::A, answer, now);
    }

    fn a_record(name: &str, ttl: u32) -> Record {
        Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, RData::A(A::new(192, 0, 2, 1)))
    }

    #[test]
    fn positive_answer_counts_down_then_goes_stale_then_expires() {
        let cache = AnswerCache::new(&settings());
        let now = Instant::now();
        let answer = UpstreamAnswer {
            response_code: ResponseCode::NoError,
            answers: vec![a_record("a.test.", 100)],
            authorities: vec![],
        };
        insert(&cache, "a.test.", answer, now);

        let CacheLookup::Fresh(entry) = cache.get(&key("a.test."), now + Duration::from_secs(40)) else {
            panic!("fresh")
        };
        assert_eq!(entry.answer_at(now + Duration::from_secs(40)).answers[0].ttl, 60);

        let CacheLookup::Stale(entry) = cache.get(&key("a.test."), now + Duration::from_secs(101)) else {
            panic!("stale")
        };
        assert_eq!(entry.answer_at(now + Duration::from_secs(101)).answers[0].ttl, STALE_ANSWER_TTL);

        assert!(matches!(cache.get(&key("a.test."), now + Duration::from_secs(701)), CacheLookup::Miss));
    }

    #[test]
    fn negative_answer_uses_soa_minimum_and_servfail_is_not_cached() {
        let cache = AnswerCache::new(&settings());
        let now = Instant::now();
        let origin = Name::from_ascii("test.").unwrap();
        let soa = SOA::new(origin.clone(), origin.clone(), 1, 3600, 600, 86400, 20);
        let soa = Record::from_rdata(origin, 300, RData::SOA(soa));
        let nx = UpstreamAnswer { response_code: ResponseCode::NXDomain, answers: vec![], authorities: vec![soa] };
        insert(&cache, "nx.test.", nx, now);
        assert!(matches!(cache.get(&key("nx.test."), now + Duration::from_secs(19)), CacheLookup::Fresh(_)));
        assert!(matches!(cache.get(&key("nx.test."), now + Duration::from_secs(21)), CacheLookup::Stale(_)));

        let fail = UpstreamAnswer { response_code: ResponseCode::ServFail, answers: vec![], authorities: vec![] };
        insert(&cache, "fail.test.", fail, now);
        assert!(matches!(cache.get(&key("fail.test."), now), CacheLookup::Miss));
    }

    #[test]
    fn keys_ignore_letter_case_and_separate_types_and_do() {
        assert_eq!(key("WWW.Example.TEST.").as_slice(), key("www.example.test.").as_slice());
        assert_ne!(CacheKey::new(&name("a.test."), RecordType::AAAA, false).as_slice(), key("a.test.").as_slice());
        assert_ne!(CacheKey::new(&name("a.test."), RecordType::A, true).as_slice(), key("a.test.").as_slice());
    }

    #[test]
    fn size_is_bounded() {
        let cache = AnswerCache::new(&CacheSettings { size: 50, ..settings() });
        let now = Instant::now();
        for i in 0..1000 {
            let name = format!("h{i}.test.");
            let answer = UpstreamAnswer {
                response_code: ResponseCode::NoError,
                answers: vec![a_record(&name, 100)],
                authorities: vec![],
            };
            insert(&cache, &name, answer, now);
        }
        assert!(cache.len() <= 60, "cache holds {} entries", cache.len());
    }

    fn big_txt_answer(name: &str, bytes: usize) -> UpstreamAnswer {
        use hickory_proto::rr::rdata::TXT;
        let strings: Vec<String> = (0..bytes / 250).map(|i| format!("{i:0250}")).collect();
        let record = Record::from_rdata(Name::from_ascii(name).unwrap(), 300, RData::TXT(TXT::new(strings)));
        UpstreamAnswer { response_code: ResponseCode::NoError, answers: vec![record], authorities: vec![] }
    }

    #[test]
    fn memory_is_bounded_in_bytes_and_recent_answers_stay() {
        // 1,000 unique 16 KB TXT answers (16 MB of record data) into a 2 MB cache.
        let bound = 2 * 1024 * 1024;
        let cache = AnswerCache::new(&CacheSettings { size: 100_000, memory_bytes: bound, ..settings() });
        let now = Instant::now();
        let txt_key = |name: &str| CacheKey::new(&name_of(name), RecordType::TXT, false);
        for i in 0..1_000 {
            let name = format!("t{i}.test.");
            cache.insert(&txt_key(&name), &name_of(&name), RecordType::TXT, big_txt_answer(&name, 16_000), now);
            assert!(cache.weight() <= bound as u64, "after {i} answers the cache weighs {}", cache.weight());
        }
        let held = cache.len();
        assert!(held > 10 && held < 200, "a 2 MB cache holds about 60 of these, not {held}");
        // Each entry weighs at least its records and their encoded copy (2 x 16 KB).
        assert!(cache.weight() >= held as u64 * 32_000, "{} bytes for {held} entries", cache.weight());
        let served = (900..1_000)
            .filter(|i| matches!(cache.get(&txt_key(&format!("t{i}.test.")), now), CacheLookup::Fresh(_)))
            .count();
        assert!(served > 0, "the cache still serves recent answers");
    }

    #[test]
    fn small_answers_fill_the_cache_up_to_its_size() {
        let cache = AnswerCache::new(&CacheSettings { size: 1_000, memory_bytes: 64 * 1024 * 1024, ..settings() });
        let now = Instant::now();
        for i in 0..1_000 {
            let name = format!("h{i}.test.");
            insert(
                &cache,
                &name,
                UpstreamAnswer {
                    response_code: ResponseCode::NoError,
                    answers: vec![a_record(&name, 100)],
                    authorities: vec![],
                },
                now,
            );
        }
        assert!(cache.len() >= 900, "the byte bound does not cut the entry count of small answers: {}", cache.len());
    }
}
