//! Evaluation of arbitrary parsed policies against arbitrary attribute values (missing,
//! wrong types, malformed sets): no panic, `explain` agrees with `is_allowed`, and a SQL
//! filter can always be built or is refused with a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_policy::{Attrs, PolicySet, Request, ResourceTable, Schema, Value};

const SCHEMA: &str = "
    entity User { dept: String, level: Long, queues: Set<String>, home?: String, ok: Bool };
    entity Ticket { dept: String, queue: String, priority: Long, hr: Bool, tags: Set<String>, n: Set<Long> };
    context { mfa: Bool, hour: Long };
    principal User;
";

fn value(b: u8, s: &str) -> Option<Value> {
    Some(match b % 8 {
        0 => return None,
        1 => Value::Bool(b & 0x10 != 0),
        2 => Value::Long(i64::from(b) - 128),
        3 => Value::Str(s.into()),
        4 => Value::strings(s.split(',')),
        5 => Value::longs([i64::from(b), -1, i64::MAX]),
        // A malformed set mixing types.
        6 => Value::Set(vec![Value::Long(1), Value::Str(s.into())].into()),
        _ => Value::Set(Vec::new().into()),
    })
}

fn attrs(names: &[&str], bytes: &[u8], s: &str) -> Attrs {
    let mut a = Attrs::new();
    for (name, b) in names.iter().zip(bytes.iter().chain(std::iter::repeat(&3))) {
        if let Some(v) = value(*b, s) {
            a.insert(name, v);
        }
    }
    a
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let rest = data.get(split + 1..).unwrap_or(&[]);
    let Ok(schema) = Schema::parse(SCHEMA) else {
        return;
    };
    let Ok(set) = PolicySet::parse(text) else {
        return;
    };
    let Ok(policy) = set.compile(&schema) else {
        return;
    };
    let s = std::str::from_utf8(rest).unwrap_or("q1,hr");
    let user = attrs(&["dept", "level", "queues", "home", "ok"], rest, s);
    let ticket = attrs(&["dept", "queue", "priority", "hr", "tags", "n"], rest.get(5..).unwrap_or(&[]), s);
    let ctx = attrs(&["mfa", "hour"], rest.get(11..).unwrap_or(&[]), s);
    let roles: Vec<&str> = s.split(',').take(4).collect();
    for action in ["read", "update", s] {
        for ty in ["Ticket", "User", s] {
            let req = Request::new(action, ty)
                .principal(s, &roles, &user)
                .resource(&ticket)
                .context(&ctx)
                .at(u64::from(rest.first().copied().unwrap_or(0)) << 24);
            let fast = policy.is_allowed(&req);
            let explained = policy.explain(&req);
            assert_eq!(fast, explained.is_allowed());
            let _ = explained.to_string();
            let _ = policy.sql_filter(&req, &ResourceTable::new(), 1);
        }
    }
});
