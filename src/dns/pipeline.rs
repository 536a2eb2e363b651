//! The query path: the one place the order of the stages lives.
//!
//! ```text
//! access     source in a configured network, under its rate limit? else REFUSED
//! identify   network -> group (shares access's lookup: one walk of the subnets)
//! (bypass, safesearch: a later issue plugs in here)
//! blocklist  name or a parent in a category the group is kept from? -> block answer
//! cache      fresh answer? (a stale one is kept in hand for serve-stale)
//! upstream   forward or recurse; on failure, the stale answer or SERVFAIL
//! inspection CNAME targets in the answer re-checked by the blocklist stage
//! ```
//!
//! Each stage returns either a final answer or the value the next stage
//! needs. The synchronous part ([`Pipeline::answer_now`]) runs on the
//! listener's own task and settles most queries (policy answers and cache
//! hits); only what must go upstream is handed to [`Pipeline::resolve`].
//! [`Pipeline::decide`] runs the policy stages alone, which is what
//! `hedgerow check` prints without sending anything upstream.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use arc_swap::ArcSwap;
use hickory_proto::rr::{LowerName, RData, Record, RecordType};

use super::access::{self, ClientRateLimiter};
use super::blocklist::{self, Verdict};
use super::cache::{AnswerCache, CacheKey, CacheLookup, CachedAnswer, UpstreamAnswer};
use super::decision::{Decision, DecisionKind, Stage};
use super::identify::{Client, NetworkMap};
use super::upstream::{Upstream, UpstreamError};
use super::wire::ExtendedError;
use crate::config::Config;
use crate::lists::compiled::CompiledLists;
use crate::policy::{CategorySet, GroupPolicy};

/// The question as the pipeline sees it (one per message).
#[derive(Debug, Clone)]
pub struct Question {
    pub name: LowerName,
    pub record_type: RecordType,
    pub dnssec_ok: bool,
}

/// Who is asking: a real source address, or (for `hedgerow check --group`) a
/// group named directly.
#[derive(Debug, Clone)]
pub enum Requester<'a> {
    Source(IpAddr),
    Group(&'a str),
}

/// A finished answer and the decision behind it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response_code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub decision: Decision,
    /// RFC 8914 detail for the client (blocked answers carry their category).
    pub extended_error: Option<ExtendedError>,
    /// True when no upstream was asked (cache hit or policy answer).
    pub cache_hit: bool,
    pub upstream_latency: Option<Duration>,
}

impl Answer {
    pub fn empty(response_code: ResponseCode, decision: Decision) -> Answer {
        Answer {
            response_code,
            answers: Vec::new(),
            authorities: Vec::new(),
            decision,
            extended_error: None,
            cache_hit: false,
            upstream_latency: None,
        }
    }

    fn from_upstream(answer: UpstreamAnswer, decision: Decision) -> Answer {
        Answer {
            response_code: answer.response_code,
            answers: answer.answers,
            authorities: answer.authorities,
            decision,
            extended_error: None,
            cache_hit: false,
            upstream_latency: None,
        }
    }
}

/// The outcome of the policy stages.
pub enum Flow {
    /// Policy settled the answer.
    Final(Answer),
    /// Policy lets the query through: resolve it for this client. The note
    /// says why when an override let it through.
    Resolve(Arc<Client>, Option<String>),
}

/// What the synchronous stages could settle.
pub enum Immediate {
    /// Settled by policy.
    Answer(Answer),
    /// A fresh cache entry, to be written with its TTLs counted down.
    Cached {
        entry: Arc<CachedAnswer>,
        decision: Decision,
    },
    /// Must go upstream (the asynchronous part).
    Upstream(Arc<Client>),
}

pub struct Pipeline {
    networks: NetworkMap,
    rate_limiter: Option<ClientRateLimiter>,
    policies: HashMap<Arc<str>, GroupPolicy>,
    locked: CategorySet,
    /// Swapped whole on reload; readers keep the copy they loaded.
    lists: ArcSwap<CompiledLists>,
    cache: AnswerCache,
    upstream: Upstream,
}

impl Pipeline {
    pub fn new(config: &Config, lists: CompiledLists) -> Result<Pipeline, UpstreamError> {
        Ok(Pipeline {
            networks: NetworkMap::new(&config.networks),
            rate_limiter: ClientRateLimiter::new(&config.rate_limit),
            policies: config.groups.iter().map(|(name, policy)| (Arc::from(name.as_str()), policy.clone())).collect(),
            locked: config.locked,
            lists: ArcSwap::from_pointee(lists),
            cache: AnswerCache::new(&config.cache),
            upstream: Upstream::new(&config.upstream)?,
        })
    }

    /// Swaps in a new compiled list set. Queries in progress finish with the
    /// set they started with; none waits.
    pub fn replace_lists(&self, lists: CompiledLists) {
        self.lists.store(Arc::new(lists));
    }

    /// The list set in use now.
    pub fn lists(&self) -> Arc<CompiledLists> {
        self.lists.load_full()
    }

    fn policy(&self, client: &Client) -> &GroupPolicy {
        // Every network's group exists: config validation guarantees it.
        &self.policies[&client.group]
    }

    /// Answers one question from one source: every stage, in order.
    pub async fn answer(&self, source: IpAddr, question: &Question) -> Answer {
        match self.answer_now(source, question) {
            Immediate::Answer(answer) => answer,
            Immediate::Cached { entry, decision } => {
                let mut answer = Answer::from_upstream(entry.answer_at(Instant::now()), decision);
                answer.cache_hit = true;
                answer
            }
            Immediate::Upstream(client) => self.resolve(&client, question).await,
        }
    }

    /// Answer inspection: a CNAME in the answer whose target is blocked for
    /// this group blocks the whole answer.
    fn inspect(&self, client: &Client, question: &Question, records: &[Record]) -> Option<Answer> {
        let policy = self.policy(client);
        let lists = self.lists.load();
        let mut buffer = [0u8; 256];
        records.iter().find_map(|record| {
            let RData::CNAME(target) = &record.data else { return None };
            let target_name = blocklist::dotted(&target.0, &mut buffer);
            let Verdict::Blocked(block) = blocklist::check(&lists, policy, self.locked, target_name) else { return None };
            let target_text = String::from_utf8_lossy(target_name).into_owned();
            let reason = format!("CNAME target {}", block.describe(&target_text));
            Some(blocklist::block_answer(policy, client, &question.name, question.record_type, &block, Stage::AnswerInspection, reason))
        })
    }

    /// The stages that need no waiting: policy, then the cache.
    pub fn answer_now(&self, source: IpAddr, question: &Question) -> Immediate {
        let client = match self.decide(Requester::Source(source), question, true) {
            Flow::Final(answer) => return Immediate::Answer(answer),
            Flow::Resolve(client, _) => client,
        };
        match self.cache.get(&cache_key(question), Instant::now()) {
            CacheLookup::Fresh(entry) => {
                if let Some(blocked) = self.inspect(&client, question, &entry.stored().answers) {
                    return Immediate::Answer(blocked);
                }
                let decision = Decision::new(
                    DecisionKind::Allowed,
                    Stage::Cache,
                    "answered from the cache",
                );
                Immediate::Cached {
                    entry,
                    decision: decision.for_client(&client.network, &client.group),
                }
            }
            // A stale entry is fetched again in `resolve`, which keeps it for
            // serve-stale if upstream fails.
            CacheLookup::Stale(_) | CacheLookup::Miss => Immediate::Upstream(client),
        }
    }

    /// The policy stages alone. `count_towards_rate_limit` is false for
    /// `hedgerow check`, which must not spend a client's tokens.
    pub fn decide(
        &self,
        requester: Requester<'_>,
        question: &Question,
        count_towards_rate_limit: bool,
    ) -> Flow {
        let _ = question; // the bypass, safesearch and blocklist stages will read it
        let client = match requester {
            Requester::Source(source) => {
                let limiter = self
                    .rate_limiter
                    .as_ref()
                    .filter(|_| count_towards_rate_limit);
                match access::admit(&self.networks, limiter, source) {
                    Ok(client) => client.clone(),
                    Err(decision) => {
                        return Flow::Final(Answer::empty(ResponseCode::Refused, decision));
                    }
                }
            }
            Requester::Group(group) => match self.policies.get_key_value(group) {
                Some((group, _)) => Arc::new(Client {
                    network: Arc::from("(named group)"),
                    group: group.clone(),
                }),
                None => {
                    let decision = Decision::new(
                        DecisionKind::Refused,
                        Stage::Identify,
                        format!("no group named {group:?}"),
                    );
                    return Flow::Final(Answer::empty(ResponseCode::Refused, decision));
                }
            },
        };

        // blocklist
        let policy = self.policy(&client);
        let mut buffer = [0u8; 256];
        let name = blocklist::dotted(&question.name, &mut buffer);
        match blocklist::check(&self.lists.load(), policy, self.locked, name) {
            Verdict::Blocked(block) => {
                let reason = block.describe(&String::from_utf8_lossy(name));
                let answer = blocklist::block_answer(policy, &client, &question.name, question.record_type, &block, Stage::Blocklist, reason);
                Flow::Final(answer)
            }
            Verdict::Allowed(rule) => Flow::Resolve(client, Some(format!("listed, but allowed for this group by override {:?}", rule.rule))),
            Verdict::Pass => Flow::Resolve(client, None),
        }
    }

    /// The cache and upstream stages, for a client policy let through.
    pub async fn resolve(&self, client: &Client, question: &Question) -> Answer {
        let key = cache_key(question);
        let now = Instant::now();
        let stale = match self.cache.get(&key, now) {
            CacheLookup::Fresh(entry) => {
                let decision = Decision::new(
                    DecisionKind::Allowed,
                    Stage::Cache,
                    "answered from the cache",
                );
                let mut answer = Answer::from_upstream(
                    entry.answer_at(now),
                    decision.for_client(&client.network, &client.group),
                );
                answer.cache_hit = true;
                return answer;
            }
            CacheLookup::Stale(entry) => Some(entry),
            CacheLookup::Miss => None,
        };

        let started = Instant::now();
        let result = self
            .upstream
            .resolve(&question.name, question.record_type, question.dnssec_ok)
            .await;
        let latency = started.elapsed();
        let mut answer = match (result, stale) {
            (Ok(upstream), _) => {
                self.cache.insert(key, upstream.clone(), Instant::now());
                if let Some(blocked) = self.inspect(client, question, &upstream.answers) {
                    return blocked;
                }
                let decision = Decision::new(
                    DecisionKind::Allowed,
                    Stage::Upstream,
                    self.upstream.describe(),
                );
                Answer::from_upstream(upstream, decision)
            }
            (Err(error), Some(stale)) => {
                tracing::warn!(name = %question.name, %error, "every upstream failed; serving a stale answer (RFC 8767)");
                let reason = format!("served stale from the cache: {error}");
                let decision = Decision::new(DecisionKind::Allowed, Stage::Cache, reason);
                if let Some(blocked) = self.inspect(client, question, &stale.stored().answers) {
                    return blocked;
                }
                let mut answer = Answer::from_upstream(stale.answer_at(Instant::now()), decision);
                answer.cache_hit = true;
                answer
            }
            (Err(error), None) => {
                tracing::debug!(name = %question.name, %error, "upstream failed");
                let decision = Decision::new(
                    DecisionKind::Error,
                    Stage::Upstream,
                    format!("no upstream answer: {error}"),
                );
                Answer::empty(ResponseCode::ServFail, decision)
            }
        };
        answer.decision = answer.decision.for_client(&client.network, &client.group);
        answer.upstream_latency = Some(latency);
        answer
    }

    /// Periodic upkeep: forget rate-limit buckets of idle clients.
    pub fn tidy(&self) {
        if let Some(limiter) = &self.rate_limiter {
            limiter.forget_idle_clients();
        }
    }

    pub fn upstream_description(&self) -> &'static str {
        self.upstream.describe()
    }
}

fn cache_key(question: &Question) -> CacheKey {
    CacheKey {
        name: question.name.clone(),
        record_type: question.record_type,
        dnssec_ok: question.dnssec_ok,
    }
}
