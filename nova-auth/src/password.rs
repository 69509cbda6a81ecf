//! Passwords: Argon2id hashing in PHC strings, transparent re-hashing, and a policy whose
//! violations a UI can show.
