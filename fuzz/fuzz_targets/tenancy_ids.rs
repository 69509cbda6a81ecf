//! Every text parser in `nova-tenancy` (ids, role and region names, SQL identifiers) on
//! arbitrary input: no panic, and anything accepted prints back to an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_tenancy::{Ident, Region, RequestId, Role, TenantId, UserId};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = s.parse::<TenantId>() {
        assert_eq!(t.to_string(), s.to_ascii_lowercase());
        assert_eq!(t.to_string().parse::<TenantId>().ok(), Some(t));
    }
    let _ = s.parse::<UserId>();
    let _ = s.parse::<RequestId>();
    if let Ok(r) = Role::new(s) {
        assert_eq!(r.as_str(), s);
    }
    let _ = Region::new(s);
    if let Ok(i) = Ident::new(s) {
        assert_eq!(i.to_string(), format!("\"{s}\""));
    }
});
