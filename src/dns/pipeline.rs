//! The query path: the one place the order of the stages lives.
//!
//! ```text
//! access     source in a configured network, under its rate limit? else REFUSED
//! identify   network -> group (shares access's lookup: one walk of the subnets)
//! (bypass, safesearch, blocklist: later issues plug in here, before the cache)
//! cache      fresh answer? (a stale one is kept in hand for serve-stale)
//! upstream   forward or recurse; on failure, the stale answer or SERVFAIL
//! ```
//!
//! Each stage returns either a final answer or the value the next stage
//! needs. The synchronous part ([`Pipeline::answer_now`]) runs on the
//! listener's own task and settles most queries (policy answers and cache
//! hits); only what must go upstream is handed to [`Pipeline::resolve`].
//! [`Pipeline::decide`] runs the policy stages alone, which is what
//! `hedgerow check` prints without sending anything upstream.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Record, RecordType};

use super::access::{self, ClientRateLimiter};
use super::cache::{AnswerCache, CacheKey, CacheLookup, CachedAnswer, UpstreamAnswer};
use super::decision::{Decision, DecisionKind, Stage};
use super::identify::{Client, NetworkMap};
use super::upstream::{Upstream, UpstreamError};
use super::wire::ExtendedError;
use crate::config::Config;

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
    /// Policy lets the query through: resolve it for this client.
    Resolve(Arc<Client>),
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
    groups: Vec<Arc<str>>,
    cache: AnswerCache,
    upstream: Upstream,
}

impl Pipeline {
    pub fn new(config: &Config) -> Result<Pipeline, UpstreamError> {
        Ok(Pipeline {
            networks: NetworkMap::new(&config.networks),
            rate_limiter: ClientRateLimiter::new(&config.rate_limit),
            groups: config
                .groups
                .keys()
                .map(|g| Arc::from(g.as_str()))
                .collect(),
            cache: AnswerCache::new(&config.cache),
            upstream: Upstream::new(&config.upstream)?,
        })
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

    /// The stages that need no waiting: policy, then the cache.
    pub fn answer_now(&self, source: IpAddr, question: &Question) -> Immediate {
        let client = match self.decide(Requester::Source(source), question, true) {
            Flow::Final(answer) => return Immediate::Answer(answer),
            Flow::Resolve(client) => client,
        };
        match self.cache.get(&cache_key(question), Instant::now()) {
            CacheLookup::Fresh(entry) => {
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
            Requester::Group(group) => match self.groups.iter().find(|g| &***g == group) {
                Some(group) => Arc::new(Client {
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
        Flow::Resolve(client)
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
