//! The canonical encoding is byte-for-byte stable and never carries a sensitive value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nova_audit::{AuditEvent, Outcome};
use nova_tenancy::{RequestId, TenantId};
use proptest::prelude::*;

#[test]
fn canonical_json_is_sorted_compact_and_exact() {
    let tenant: TenantId = "6f1c2f7e-3b1a-4c55-9a59-0a4b3c2d1e0f".parse().unwrap();
    let rid: RequestId = "0b9c6f9e-1d2e-4f3a-8b4c-5d6e7f8a9b0c".parse().unwrap();
    let e = AuditEvent::builder(tenant, "data.export", "tickets.export")
        .time_ms(1_700_000_000_123)
        .actor("user:7")
        .ip("10.0.0.7".parse().unwrap())
        .resource("ticket/42")
        .outcome(Outcome::Denied)
        .rows(3)
        .duration_ms(12)
        .policy("hr-tickets-deny")
        .request_id(rid)
        .param("format", "csv\n\"quoted\"\u{1}")
        .int_param("limit", -5)
        .sensitive_param("email", "alice@example.com")
        .build();
    let json = String::from_utf8(e.canonical_json()).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"{"action":"tickets.export","actor":"user:7","duration_ms":12,"event_type":"data.export","#,
            r#""ip":"10.0.0.7","outcome":"denied","params":{"email":"[REDACTED]","format":"csv\n\"quoted\"\u0001","limit":-5},"#,
            r#""policies":["hr-tickets-deny"],"request_id":"0b9c6f9e-1d2e-4f3a-8b4c-5d6e7f8a9b0c","resource":"ticket/42","#,
            r#""rows":3,"tenant":"6f1c2f7e-3b1a-4c55-9a59-0a4b3c2d1e0f","time_ms":1700000000123,"v":1}"#
        )
    );
    // It is valid JSON, and its top-level keys appear in byte order in the text itself
    // (a parsed map would sort them anyway, proving nothing).
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort();
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| json.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "keys out of order in {json}"
    );
    assert!(!format!("{e:?}").contains("alice"));
}

proptest! {
    #[test]
    fn sensitive_values_never_appear_and_text_round_trips(
        secret in "[a-zA-Z0-9@.]{8,40}",
        text in "\\PC{0,60}",
    ) {
        let e = AuditEvent::builder(TenantId::new_v4(), "t", "a")
            .param("text", &text)
            .sensitive_param("secret", &secret)
            .build();
        let json = String::from_utf8(e.canonical_json()).unwrap();
        prop_assert!(!json.contains(&secret));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(v["params"]["text"].as_str().unwrap(), text.as_str());
        prop_assert_eq!(e.canonical_json(), e.clone().canonical_json());
    }
}

/// RFC 8785 §3.2.2.2 string escaping, written out character by character as the standard
/// states it, to check the encoder's faster byte-run implementation against.
fn jcs_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    /// Any string, control characters and non-ASCII included, is escaped exactly as RFC 8785
    /// says and parses back to itself.
    #[test]
    fn any_string_is_escaped_as_rfc_8785_says(
        text in "[\\x00-\\x20\"\\\\a-z\\x7f\\u{80}-\\u{10FFFF}]{0,60}",
    ) {
        let e = AuditEvent::builder(TenantId::new_v4(), "t", "a")
            .resource(&text)
            .build();
        let json = String::from_utf8(e.canonical_json()).unwrap();
        let expected = format!("\"resource\":{}", jcs_string(&text));
        prop_assert!(json.contains(&expected), "{} lacks {}", json, expected);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(v["resource"].as_str().unwrap(), text.as_str());
    }
}
