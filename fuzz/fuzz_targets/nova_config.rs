//! The one configuration file (`nova::Config::from_toml`) on arbitrary text: never a panic,
//! and a configuration that loads validates again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = nova::Config::from_toml(text) {
        config.validate().expect("a loaded configuration validates");
        let _ = format!("{config:?}");
    }
});
