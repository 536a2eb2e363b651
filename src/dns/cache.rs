//! cache: upstream answers kept for their TTL, bounded in size, with negative
//! caching (RFC 2308) and serve-stale (RFC 8767).
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
use quick_cache::sync::Cache;

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

/// An answer from upstream: positive, NXDOMAIN or NODATA.
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    pub response_code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
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
    /// RFC 8767 failure recheck: when a refresh of this (stale) answer last
    /// failed, in milliseconds after `stored_at` plus one; 0 for never.
    refresh_failed: AtomicU32,
}

impl CachedAnswer {
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

pub struct AnswerCache {
    entries: Cache<Box<[u8]>, Arc<CachedAnswer>>,
    settings: CacheSettings,
}

impl AnswerCache {
    pub fn new(settings: &CacheSettings) -> AnswerCache {
        AnswerCache { entries: Cache::new(settings.size), settings: settings.clone() }
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
        let entry = CachedAnswer {
            answer,
            wire,
            stored_at: now,
            fresh_until,
            stale_until: fresh_until + self.settings.serve_stale_for,
            refresh_failed: AtomicU32::new(0),
        };
        self.entries.insert(Box::from(key.as_slice()), Arc::new(entry));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
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
}
