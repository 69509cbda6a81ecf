//! Key id and version parsing on arbitrary input: no panic; accepted ids round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_crypto::{KeyId, KeyVersion};

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = KeyId::from_bytes(data) {
        assert_eq!(id.as_str().as_bytes(), data);
        assert_eq!(KeyId::new(id.as_str()).ok(), Some(id));
    }
    if data.len() >= 4 {
        let v = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        assert_eq!(KeyVersion::new(v).is_ok(), v != 0);
    }
});
