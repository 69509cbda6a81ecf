//! Stored password hashes are untrusted (they come from a database): arbitrary bytes as a
//! PHC string give typed errors, never a panic, and parsing agrees with verification.
//!
//! Verification runs with the ceiling lowered to the OWASP minimum, so the worst input the
//! fuzzer can build costs one 19 MiB Argon2 run; the parser alone is also run with the
//! default ceiling. Prefixes put the fuzzed text behind a well-formed header so the
//! parameter, salt and tag decoding are reached without a seed corpus.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nova_auth::password::{Argon2Params, PasswordError, Passwords, SecretString};

struct Fixture {
    default: Passwords,
    tight: Passwords,
    password: SecretString,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        default: Passwords::default(),
        tight: Passwords::default()
            .with_ceiling(Argon2Params::OWASP_MINIMUM)
            .expect("the minimum is within itself"),
        password: SecretString::from("password"),
    })
}

const PREFIXES: [&str; 4] = [
    "",
    "$argon2id$v=19$",
    "$argon2id$v=19$m=64,t=1,p=1$",
    "$argon2i$m=32,t=1,p=2$c29tZXNhbHQ$",
];

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let text = String::from_utf8_lossy(data);
    for prefix in PREFIXES {
        let phc = format!("{prefix}{text}");

        // Parsing alone, with the full default ceiling: no hashing happens here.
        let _ = f.default.needs_rehash(&phc);

        // Verification: whatever parsing refuses, verification refuses the same way;
        // whatever parsing accepts is hashed and gives a match or a mismatch.
        match (
            f.tight.needs_rehash(&phc),
            f.tight.verify(&f.password, &phc),
        ) {
            (Err(parse), verify) => assert_eq!(verify, Err(parse)),
            (Ok(_), Ok(_) | Err(PasswordError::Mismatch)) => {}
            (Ok(_), Err(other)) => panic!("parsed, then refused: {other:?}"),
        }
    }
});
