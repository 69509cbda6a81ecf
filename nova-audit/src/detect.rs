//! Detection rules over the event stream, alerts through a callback, and counters in the
//! Prometheus text format.
//!
//! The rules read the event types named in [`event_types`]; the other Nova crates and
//! applications emit those types for the situations the rules watch. Windows are measured
//! on the events' own timestamps, so replaying a log gives the same alerts as watching it
//! live, and an event stamped far in the future makes older actors look stale. Memory is
//! bounded: at most [`DetectorConfig::max_tracked`] actors (names cut to 256 bytes) are
//! tracked for the failed-login rule, in one table shared by all tenants; past that, new
//! actors are not tracked, [`Rule::TrackingSaturated`] fires, and the
//! `nova_audit_detector_untracked_total` counter says how many failures went uncounted.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nova_tenancy::TenantId;

use crate::event::{AuditEvent, Outcome};

/// The event types the detection rules read.
pub mod event_types {
    /// A login or credential check failed (outcome [`Failure`](crate::Outcome::Failure)).
    pub const LOGIN_FAILED: &str = "auth.login_failed";
    /// A request tried to reach another tenant's data.
    pub const CROSS_TENANT: &str = "security.cross_tenant_attempt";
    /// A connection or transaction bypassed row-level security.
    pub const RLS_BYPASS: &str = "db.rls_bypass";
    /// A tenant key was destroyed (crypto-shredding).
    pub const KEY_DESTROYED: &str = "crypto.key_destroyed";
}

/// Which rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// More than the configured number of failed logins for one actor within the window.
    RepeatedLoginFailures,
    /// An attempt to reach another tenant.
    CrossTenantAttempt,
    /// Row-level security was bypassed.
    RlsBypass,
    /// A tenant key was destroyed.
    KeyDestroyed,
    /// The failed-login table is full of actors still inside the window, so failed logins of
    /// new actors are not being counted: detection is partly blind (a flood of distinct
    /// actor names causes this). Fired once each time the table fills up.
    TrackingSaturated,
}

impl Rule {
    const ALL: [Rule; 5] = [
        Rule::RepeatedLoginFailures,
        Rule::CrossTenantAttempt,
        Rule::RlsBypass,
        Rule::KeyDestroyed,
        Rule::TrackingSaturated,
    ];

    /// The rule's stable name, used as the `rule` label of the alert counter.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Rule::RepeatedLoginFailures => "repeated_login_failures",
            Rule::CrossTenantAttempt => "cross_tenant_attempt",
            Rule::RlsBypass => "rls_bypass",
            Rule::KeyDestroyed => "key_destroyed",
            Rule::TrackingSaturated => "tracking_saturated",
        }
    }

    fn index(self) -> usize {
        match self {
            Rule::RepeatedLoginFailures => 0,
            Rule::CrossTenantAttempt => 1,
            Rule::RlsBypass => 2,
            Rule::KeyDestroyed => 3,
            Rule::TrackingSaturated => 4,
        }
    }
}

/// An alert: which rule, for which tenant and actor, at which event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The rule that fired.
    pub rule: Rule,
    /// The tenant the events belong to.
    pub tenant: TenantId,
    /// The actor, when the event names one.
    pub actor: Option<String>,
    /// The time of the event that fired the rule (milliseconds since the Unix epoch).
    pub time_ms: u64,
    /// How many events the rule counted (1 for single-event rules).
    pub count: u32,
}

/// Thresholds of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorConfig {
    /// Failed logins for one actor that are allowed within the window; one more fires
    /// [`Rule::RepeatedLoginFailures`]. Default 5.
    pub max_login_failures: u32,
    /// The window in milliseconds. Default 5 minutes.
    pub login_window_ms: u64,
    /// Most actors tracked at once for the failed-login rule. Default 100,000.
    pub max_tracked: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            max_login_failures: 5,
            login_window_ms: 5 * 60 * 1000,
            max_tracked: 100_000,
        }
    }
}

type AlertSink = Box<dyn Fn(&Alert) + Send + Sync>;

/// What recording a failed login led to.
enum Counted {
    Quiet,
    Alert(u32),
    Saturated,
}

/// Runs the rules over events and counts what it sees.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use nova_audit::{AuditEvent, Detector, Outcome, Rule, event_types};
/// use nova_tenancy::TenantId;
///
/// let alerts = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&alerts);
/// let detector = Detector::new(move |alert| sink.lock().unwrap().push(alert.rule));
/// let tenant = TenantId::new_v4();
/// for i in 0..6 {
///     let event = AuditEvent::builder(tenant, event_types::LOGIN_FAILED, "auth.login")
///         .time_ms(1_700_000_000_000 + i * 1000)
///         .actor("user:42")
///         .outcome(Outcome::Failure)
///         .build();
///     detector.observe(&event);
/// }
/// assert_eq!(*alerts.lock().unwrap(), [Rule::RepeatedLoginFailures]);
/// assert!(detector.prometheus().contains(r#"nova_audit_alerts_total{rule="repeated_login_failures"} 1"#));
/// ```
pub struct Detector {
    config: DetectorConfig,
    on_alert: AlertSink,
    failures: Mutex<Failures>,
    events: [AtomicU64; 4],
    alerts: [AtomicU64; 5],
    untracked: AtomicU64,
}

#[derive(Default)]
struct Failures {
    by_actor: HashMap<(TenantId, String), VecDeque<u64>>,
    newest_ms: u64,
    /// Event time of the last purge of stale actors; purges of a full table are spaced
    /// an eighth of the window apart, so a flood of new actors cannot make every failed
    /// login scan the whole table.
    last_purge_ms: Option<u64>,
    saturated: bool,
}

/// Longest actor name kept as a key (longer names are cut at a character boundary), so
/// the table's memory is bounded by `max_tracked` × this.
const MAX_ACTOR_KEY: usize = 256;

fn actor_key(actor: Option<&str>) -> String {
    let actor = actor.unwrap_or_default();
    let mut end = actor.len().min(MAX_ACTOR_KEY);
    while !actor.is_char_boundary(end) {
        end -= 1;
    }
    actor[..end].to_owned()
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn outcome_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Success => 0,
        Outcome::Failure => 1,
        Outcome::Denied => 2,
        Outcome::Error => 3,
    }
}

const OUTCOMES: [&str; 4] = ["success", "failure", "denied", "error"];

impl Detector {
    /// A detector with the default thresholds that calls `on_alert` for every alert.
    #[must_use]
    pub fn new(on_alert: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        Self::with_config(DetectorConfig::default(), on_alert)
    }

    /// A detector with `config`.
    #[must_use]
    pub fn with_config(
        config: DetectorConfig,
        on_alert: impl Fn(&Alert) + Send + Sync + 'static,
    ) -> Self {
        Self {
            config,
            on_alert: Box::new(on_alert),
            failures: Mutex::new(Failures::default()),
            events: Default::default(),
            alerts: Default::default(),
            untracked: AtomicU64::new(0),
        }
    }

    /// Runs every rule over `event`, calling the alert callback for each rule that fires.
    pub fn observe(&self, event: &AuditEvent) {
        self.events[outcome_index(event.outcome)].fetch_add(1, Ordering::Relaxed);
        let single = match event.event_type.as_str() {
            event_types::CROSS_TENANT => Some(Rule::CrossTenantAttempt),
            event_types::RLS_BYPASS => Some(Rule::RlsBypass),
            event_types::KEY_DESTROYED => Some(Rule::KeyDestroyed),
            event_types::LOGIN_FAILED if event.outcome == Outcome::Failure => {
                match self.count_failure(event) {
                    Counted::Alert(count) => self.fire(Rule::RepeatedLoginFailures, event, count),
                    Counted::Saturated => self.fire(Rule::TrackingSaturated, event, 1),
                    Counted::Quiet => {}
                }
                None
            }
            _ => None,
        };
        if let Some(rule) = single {
            self.fire(rule, event, 1);
        }
    }

    /// Records a failed login.
    fn count_failure(&self, event: &AuditEvent) -> Counted {
        let window = self.config.login_window_ms;
        let limit = self.config.max_login_failures as usize;
        // A poisoned lock only means a callback panicked elsewhere; the counts are intact.
        let mut state = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.newest_ms = state.newest_ms.max(event.time_ms);
        let key = (event.tenant, actor_key(event.actor.as_deref()));
        if !state.by_actor.contains_key(&key) && state.by_actor.len() >= self.config.max_tracked {
            let due = state
                .last_purge_ms
                .is_none_or(|t| event.time_ms >= t.saturating_add(window / 8));
            if due {
                let horizon = state.newest_ms.saturating_sub(window);
                state
                    .by_actor
                    .retain(|_, times| times.back().is_some_and(|&t| t >= horizon));
                state.last_purge_ms = Some(event.time_ms);
            }
            if state.by_actor.len() >= self.config.max_tracked {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                let first = !state.saturated;
                state.saturated = true;
                return if first {
                    Counted::Saturated
                } else {
                    Counted::Quiet
                };
            }
            state.saturated = false;
        }
        let times = state.by_actor.entry(key).or_default();
        let horizon = event.time_ms.saturating_sub(window);
        while times.front().is_some_and(|&t| t < horizon) {
            times.pop_front();
        }
        times.push_back(event.time_ms);
        if times.len() > limit {
            let count = u32::try_from(times.len()).unwrap_or(u32::MAX);
            // Start counting afresh: the next alert needs another full burst.
            times.clear();
            return Counted::Alert(count);
        }
        Counted::Quiet
    }

    fn fire(&self, rule: Rule, event: &AuditEvent, count: u32) {
        self.alerts[rule.index()].fetch_add(1, Ordering::Relaxed);
        (self.on_alert)(&Alert {
            rule,
            tenant: event.tenant,
            actor: event.actor.clone(),
            time_ms: event.time_ms,
            count,
        });
    }

    /// Alerts fired so far for `rule`.
    #[must_use]
    pub fn alert_count(&self, rule: Rule) -> u64 {
        self.alerts[rule.index()].load(Ordering::Relaxed)
    }

    /// The counters in the Prometheus text exposition format (version 0.0.4).
    #[must_use]
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP nova_audit_events_total Audit events observed, by outcome.\n");
        out.push_str("# TYPE nova_audit_events_total counter\n");
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let n = self.events[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "nova_audit_events_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str("# HELP nova_audit_alerts_total Alerts fired, by detection rule.\n");
        out.push_str("# TYPE nova_audit_alerts_total counter\n");
        for rule in Rule::ALL {
            let n = self.alert_count(rule);
            let _ = writeln!(
                out,
                "nova_audit_alerts_total{{rule=\"{}\"}} {n}",
                rule.name()
            );
        }
        out.push_str(
            "# HELP nova_audit_detector_untracked_total Failed logins not tracked because the actor table was full.\n",
        );
        out.push_str("# TYPE nova_audit_detector_untracked_total counter\n");
        let _ = writeln!(
            out,
            "nova_audit_detector_untracked_total {}",
            self.untracked.load(Ordering::Relaxed)
        );
        out
    }
}
