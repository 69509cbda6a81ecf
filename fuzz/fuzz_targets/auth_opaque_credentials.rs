//! API keys, refresh tokens and session tokens on arbitrary input: typed errors, never a
//! panic; anything accepted has the documented shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_auth::{API_KEY_LEN, parse_api_key, parse_refresh_token, parse_session_token};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = parse_api_key(text) {
        assert_eq!(text.len(), API_KEY_LEN);
        assert_eq!(k.key_id.len(), 16);
    }
    if parse_refresh_token(text).is_ok() {
        assert!(text.starts_with("nova_rt_"));
    }
    if parse_session_token(text).is_ok() {
        assert!(text.starts_with("nova_ss_"));
    }
});
