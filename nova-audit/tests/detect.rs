//! Detection rules: the failed-login threshold and window, per-actor and per-tenant
//! separation, single-event rules, bounded tracking, and the Prometheus counters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use nova_audit::{Alert, AuditEvent, Detector, DetectorConfig, Outcome, Rule, event_types};
use nova_tenancy::TenantId;

const T0: u64 = 1_700_000_000_000;
const SEC: u64 = 1000;

fn collecting(config: DetectorConfig) -> (Detector, Arc<Mutex<Vec<Alert>>>) {
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&alerts);
    let detector = Detector::with_config(config, move |a| sink.lock().unwrap().push(a.clone()));
    (detector, alerts)
}

fn failed(tenant: TenantId, actor: &str, at: u64) -> AuditEvent {
    AuditEvent::builder(tenant, event_types::LOGIN_FAILED, "auth.login")
        .time_ms(at)
        .actor(actor)
        .outcome(Outcome::Failure)
        .build()
}

#[test]
fn the_sixth_failed_login_within_five_minutes_fires_once() {
    let (d, alerts) = collecting(DetectorConfig::default());
    let t = TenantId::new_v4();
    for i in 0..5 {
        d.observe(&failed(t, "user:1", T0 + i * 50 * SEC));
    }
    assert!(
        alerts.lock().unwrap().is_empty(),
        "five failures are allowed"
    );
    d.observe(&failed(t, "user:1", T0 + 250 * SEC));
    let got = alerts.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rule, Rule::RepeatedLoginFailures);
    assert_eq!(
        (got[0].tenant, got[0].actor.as_deref(), got[0].count),
        (t, Some("user:1"), 6)
    );
    assert_eq!(got[0].time_ms, T0 + 250 * SEC);
    // The next failure starts a new count rather than alerting on every further failure.
    d.observe(&failed(t, "user:1", T0 + 251 * SEC));
    assert_eq!(alerts.lock().unwrap().len(), 1);
}

#[test]
fn failures_spread_over_more_than_the_window_do_not_fire() {
    let (d, alerts) = collecting(DetectorConfig::default());
    let t = TenantId::new_v4();
    // Six failures, 61 s apart: any five-minute window holds at most five.
    for i in 0..12 {
        d.observe(&failed(t, "user:1", T0 + i * 61 * SEC));
    }
    assert!(alerts.lock().unwrap().is_empty());
}

#[test]
fn actors_and_tenants_are_counted_apart_and_successes_do_not_count() {
    let (d, alerts) = collecting(DetectorConfig::default());
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    for i in 0..3 {
        d.observe(&failed(a, "user:1", T0 + i));
        d.observe(&failed(a, "user:2", T0 + i));
        d.observe(&failed(b, "user:1", T0 + i));
        d.observe(&failed(b, "user:1", T0 + i));
        // Same type with a success outcome is not a failure.
        let ok = AuditEvent::builder(a, event_types::LOGIN_FAILED, "auth.login")
            .time_ms(T0 + i)
            .actor("user:1")
            .build();
        d.observe(&ok);
    }
    let got = alerts.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].tenant, got[0].actor.as_deref()),
        (b, Some("user:1"))
    );
}

#[test]
fn single_event_rules_fire_on_every_event() {
    let (d, alerts) = collecting(DetectorConfig::default());
    let t = TenantId::new_v4();
    for (ty, rule) in [
        (event_types::CROSS_TENANT, Rule::CrossTenantAttempt),
        (event_types::RLS_BYPASS, Rule::RlsBypass),
        (event_types::KEY_DESTROYED, Rule::KeyDestroyed),
    ] {
        d.observe(&AuditEvent::builder(t, ty, "x").time_ms(T0).build());
        assert_eq!(alerts.lock().unwrap().last().unwrap().rule, rule);
        assert_eq!(d.alert_count(rule), 1);
    }
    d.observe(&AuditEvent::builder(t, "data.read", "tickets.read").build());
    assert_eq!(alerts.lock().unwrap().len(), 3);
}

#[test]
fn tracking_is_bounded_and_stale_actors_make_room() {
    let config = DetectorConfig {
        max_tracked: 3,
        ..DetectorConfig::default()
    };
    let (d, alerts) = collecting(config);
    let t = TenantId::new_v4();
    for actor in ["a", "b", "c", "d"] {
        d.observe(&failed(t, actor, T0));
    }
    assert!(
        d.prometheus()
            .contains("nova_audit_detector_untracked_total 1\n")
    );
    // Going blind is itself an alert, raised once per saturation.
    d.observe(&failed(t, "d2", T0 + 1));
    let rules: Vec<Rule> = alerts.lock().unwrap().iter().map(|a| a.rule).collect();
    assert_eq!(rules, [Rule::TrackingSaturated]);
    // Ten minutes later the old entries are stale and make room for a new actor, whose
    // burst is detected.
    for i in 0..6 {
        d.observe(&failed(t, "e", T0 + 600 * SEC + i));
    }
    let rules: Vec<Rule> = alerts.lock().unwrap().iter().map(|a| a.rule).collect();
    assert_eq!(
        rules,
        [Rule::TrackingSaturated, Rule::RepeatedLoginFailures]
    );
    let text = d.prometheus();
    assert!(
        text.contains("nova_audit_detector_untracked_total 2\n"),
        "{text}"
    );
    assert!(text.contains("nova_audit_alerts_total{rule=\"tracking_saturated\"} 1\n"));
}

#[test]
fn huge_actor_names_are_cut_so_memory_stays_bounded() {
    let (d, alerts) = collecting(DetectorConfig::default());
    let t = TenantId::new_v4();
    let base = "x".repeat(300);
    // Names that differ only after 256 bytes count as one actor.
    for i in 0..6 {
        d.observe(&failed(t, &format!("{base}{i}"), T0 + i));
    }
    assert_eq!(alerts.lock().unwrap().len(), 1);
    // A multi-byte character across the cut does not panic.
    d.observe(&failed(t, &format!("{}é", "y".repeat(255)), T0));
}

#[test]
fn prometheus_output_counts_events_by_outcome_and_alerts_by_rule() {
    let (d, _) = collecting(DetectorConfig::default());
    let t = TenantId::new_v4();
    for i in 0..6 {
        d.observe(&failed(t, "user:1", T0 + i));
    }
    d.observe(&AuditEvent::builder(t, "data.read", "tickets.read").build());
    d.observe(
        &AuditEvent::builder(t, "policy.decision", "tickets.delete")
            .outcome(Outcome::Denied)
            .build(),
    );
    let text = d.prometheus();
    for line in [
        "# TYPE nova_audit_events_total counter",
        "nova_audit_events_total{outcome=\"success\"} 1",
        "nova_audit_events_total{outcome=\"failure\"} 6",
        "nova_audit_events_total{outcome=\"denied\"} 1",
        "nova_audit_events_total{outcome=\"error\"} 0",
        "nova_audit_alerts_total{rule=\"repeated_login_failures\"} 1",
        "nova_audit_alerts_total{rule=\"cross_tenant_attempt\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    // Every sample line is `name{labels} value` or `name value`, as the format requires.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = l.rsplit_once(' ').unwrap();
        assert!(name.starts_with("nova_audit_"), "{l}");
        value.parse::<u64>().unwrap();
    }
}
