//! The policy and schema parsers on arbitrary text: no panic, and every condition that
//! parses prints back to text that parses to the same condition.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_policy::{Expr, PolicySet, Schema};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Schema::parse(text);
    if let Ok(set) = PolicySet::parse(text) {
        for rule in set.rules() {
            if let Some(cond) = &rule.condition {
                round_trip(cond);
            }
        }
    }
    if let Ok(e) = Expr::parse(text) {
        round_trip(&e);
    }
});

fn round_trip(e: &Expr) {
    // Printing parenthesises every `&&`, `||` and `!`, which stays within the nesting limit
    // because the limit bounds the tree's depth.
    let printed = e.to_string();
    match Expr::parse(&printed) {
        Ok(again) => assert_eq!(&again, e, "{printed}"),
        Err(err) => panic!("{printed}: {err}"),
    }
}
