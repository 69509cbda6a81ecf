//! `nova-audit`: verify an audit log and make or check inclusion proofs, offline, with the
//! log's public key.
//!
//! ```text
//! nova-audit verify <log file> --key <verifier key | @file> [--checkpoint <file>] [--origin <o>]
//! nova-audit verify <postgres-url> --key <verifier key | @file> [--schema <s>] [--tenant <id>
//!                   [--checkpoint <file>] [--origin <o>]]
//! nova-audit prove <log file> --key <verifier key | @file> --index <n>
//! nova-audit check-proof <proof file | -> --key <verifier key | @file> [--origin <o>]
//! ```
//!
//! A `postgres://` target verifies the tenant logs of the PostgreSQL sink in schema
//! `--schema` (default `nova_audit`): one tenant's with `--tenant`, otherwise every tenant's,
//! one verdict line each. Connect as a member of the reader role.
//!
//! `--origin` names the log expected (the checkpoints' origin line, one per tenant log): a
//! valid log or proof of another log signed by the same key then fails.
//!
//! Exit status: 0 when everything verifies, 1 when verification fails (the verdict says
//! why and names the first bad entry), 2 for usage or I/O errors.

#![forbid(unsafe_code)]

use std::io::Read as _;
use std::process::ExitCode;

use nova_audit::{
    BundleError, InclusionBundle, MAX_BUNDLE_LEN, MAX_CHECKPOINT_LEN, Verdict, VerifierKey,
    prove_file, verify_file,
};

const USAGE: &str = "usage:
  nova-audit verify <log file> --key <verifier key | @file> [--checkpoint <file>] [--origin <o>]
  nova-audit verify <postgres-url> --key <verifier key | @file> [--schema <s>] [--tenant <id> [--checkpoint <file>] [--origin <o>]]
  nova-audit prove <log file> --key <verifier key | @file> --index <n>
  nova-audit check-proof <proof file | -> --key <verifier key | @file> [--origin <o>]

exit status: 0 verified, 1 verification failed, 2 usage or I/O error";

/// A failure, with the exit status it maps to.
enum Failure {
    /// Verification failed (exit 1).
    Verification(String),
    /// Bad arguments or unreadable input (exit 2).
    Usage(String),
}

struct Args {
    command: String,
    target: String,
    key: String,
    checkpoint: Option<String>,
    index: Option<u64>,
    origin: Option<String>,
    schema: Option<String>,
    tenant: Option<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, Failure> {
    let usage = |why: &str| Failure::Usage(format!("{why}\n\n{USAGE}"));
    let command = argv.next().ok_or_else(|| usage("missing command"))?;
    if !matches!(command.as_str(), "verify" | "prove" | "check-proof") {
        return Err(usage("unknown command"));
    }
    let (mut target, mut key, mut checkpoint, mut index, mut origin) =
        (None, None, None, None, None);
    let (mut schema, mut tenant) = (None, None);
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| {
            argv.next()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--key" => key = Some(value("--key")?),
            "--checkpoint" if command == "verify" => checkpoint = Some(value("--checkpoint")?),
            "--origin" if command != "prove" => origin = Some(value("--origin")?),
            "--schema" if command == "verify" => schema = Some(value("--schema")?),
            "--tenant" if command == "verify" => tenant = Some(value("--tenant")?),
            "--index" if command == "prove" => {
                let text = value("--index")?;
                index = Some(
                    text.parse::<u64>()
                        .map_err(|_| usage("--index must be a non-negative integer"))?,
                );
            }
            other if other.starts_with("--") => return Err(usage("unknown option")),
            _ if target.is_none() => target = Some(arg),
            _ => return Err(usage("too many arguments")),
        }
    }
    let target = target.ok_or_else(|| usage("missing file"))?;
    let key = key.ok_or_else(|| usage("--key is required"))?;
    if command == "prove" && index.is_none() {
        return Err(usage("--index is required"));
    }
    let database = is_database(&target);
    if (schema.is_some() || tenant.is_some()) && !database {
        return Err(usage(
            "--schema and --tenant apply to a postgres:// target only",
        ));
    }
    if database && tenant.is_none() && (checkpoint.is_some() || origin.is_some()) {
        return Err(usage(
            "--checkpoint and --origin name one log: give --tenant with them",
        ));
    }
    Ok(Args {
        command,
        target,
        key,
        checkpoint,
        index,
        origin,
        schema,
        tenant,
    })
}

fn is_database(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

/// Longest key file read.
const MAX_KEY_LEN: usize = 4096;

/// Reads at most `limit` bytes of UTF-8 text from `path` (`-` for stdin); larger input is
/// refused without being read into memory.
fn read_text(path: &str, limit: usize) -> Result<String, Failure> {
    let mut text = String::new();
    let cap = limit as u64 + 1;
    let result = if path == "-" {
        std::io::stdin().take(cap).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(cap).read_to_string(&mut text))
    };
    result.map_err(|e| Failure::Usage(format!("cannot read {path}: {e}")))?;
    if text.len() > limit {
        return Err(Failure::Usage(format!(
            "{path} is larger than {limit} bytes"
        )));
    }
    Ok(text)
}

fn load_key(arg: &str) -> Result<VerifierKey, Failure> {
    let text = match arg.strip_prefix('@') {
        Some(path) => read_text(path, MAX_KEY_LEN)?,
        None => arg.to_owned(),
    };
    VerifierKey::parse(text.trim()).map_err(|e| Failure::Usage(format!("--key: {e}")))
}

fn run(args: &Args) -> Result<String, Failure> {
    let key = load_key(&args.key)?;
    match args.command.as_str() {
        "verify" => {
            let external = args
                .checkpoint
                .as_deref()
                .map(|path| read_text(path, MAX_CHECKPOINT_LEN))
                .transpose()?;
            if is_database(&args.target) {
                return verify_database(args, &key, external.as_deref());
            }
            let verdict = verify_file(&args.target, &key, external.as_deref())
                .map_err(|e| Failure::Usage(format!("{}: {e}", args.target)))?;
            judge(verdict, external.is_some(), args.origin.as_deref())
        }
        "prove" => {
            let index = args.index.unwrap_or_default();
            let bundle = prove_file(&args.target, &key, index).map_err(|e| match e {
                BundleError::Log(e) => Failure::Usage(format!("{}: {e}", args.target)),
                e => Failure::Verification(format!("FAILED: {e}")),
            })?;
            Ok(bundle.to_json())
        }
        _ => {
            let text = read_text(&args.target, MAX_BUNDLE_LEN)?;
            let bundle = InclusionBundle::parse(text.trim_end())
                .map_err(|e| Failure::Verification(format!("FAILED: {e}")))?;
            let checkpoint = bundle
                .verify(&key)
                .map_err(|e| Failure::Verification(format!("FAILED: {e}")))?;
            if args
                .origin
                .as_ref()
                .is_some_and(|o| *o != checkpoint.origin)
            {
                return Err(Failure::Verification(format!(
                    "FAILED: the proof is for the log {:?}, not the one expected",
                    checkpoint.origin
                )));
            }
            Ok(format!(
                "OK: entry {} is in {} at size {}\n{}",
                bundle.index,
                checkpoint.origin,
                checkpoint.size,
                String::from_utf8_lossy(&bundle.entry)
            ))
        }
    }
}

/// The verdict of one log in words, and whether it passed.
fn judge(verdict: Verdict, external: bool, origin: Option<&str>) -> Result<String, Failure> {
    let pruned = if verdict.pruned > 0 {
        format!(
            "; entries 0..{} were pruned by retention (only their hashes remain)",
            verdict.pruned
        )
    } else {
        String::new()
    };
    match (verdict.first_bad, verdict.reason) {
        (Some(bad), reason) => Err(Failure::Verification(format!(
            "FAILED: first bad entry is {bad}: {}\n{} entries read, {} sealed by a valid checkpoint",
            reason.unwrap_or_default(),
            verdict.entries,
            verdict.sealed
        ))),
        (None, Some(reason)) => Err(Failure::Verification(format!(
            "INCOMPLETE: {reason}\n{} entries read, {} sealed by a valid checkpoint",
            verdict.entries, verdict.sealed
        ))),
        (None, None) if verdict.entries == 0 && !external => Err(Failure::Verification(
            "INCOMPLETE: the log is empty, so nothing is signed; pass --checkpoint to detect a truncated log".into(),
        )),
        (None, None) if origin.is_some_and(|o| verdict.origin.as_deref() != Some(o)) => {
            Err(Failure::Verification(format!(
                "FAILED: this is the log {:?}, not the one expected",
                verdict.origin.unwrap_or_default()
            )))
        }
        (None, None) => Ok(format!(
            "OK: {} entries of {}, all sealed by a valid checkpoint{}{pruned}",
            verdict.entries,
            verdict.origin.unwrap_or_default(),
            if external {
                "; consistent with the given checkpoint"
            } else {
                ""
            }
        )),
    }
}

#[cfg(not(feature = "postgres"))]
fn verify_database(
    _args: &Args,
    _key: &VerifierKey,
    _external: Option<&str>,
) -> Result<String, Failure> {
    Err(Failure::Usage(
        "this build has no PostgreSQL support (feature `postgres`)".into(),
    ))
}

/// Verifies one tenant's log, or every tenant's, in the PostgreSQL sink. The URL may hold a
/// password, so no message repeats it.
#[cfg(feature = "postgres")]
fn verify_database(
    args: &Args,
    key: &VerifierKey,
    external: Option<&str>,
) -> Result<String, Failure> {
    use nova_audit::PgLogSchema;
    use nova_tenancy::{Ident, TenantId};
    use sqlx::Connection as _;

    let schema = Ident::new(args.schema.as_deref().unwrap_or("nova_audit"))
        .map_err(|e| Failure::Usage(format!("--schema: {e}")))?;
    let schema =
        PgLogSchema::new(schema, "nova_").map_err(|e| Failure::Usage(format!("--schema: {e}")))?;
    let tenant = args
        .tenant
        .as_deref()
        .map(str::parse::<TenantId>)
        .transpose()
        .map_err(|e| Failure::Usage(format!("--tenant: {e}")))?;
    let options: sqlx::postgres::PgConnectOptions = args
        .target
        .parse()
        .map_err(|_| Failure::Usage("the database URL is not valid".into()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(async {
        let db = |e: nova_audit::PgLogError| Failure::Usage(format!("database: {e}"));
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(|e| Failure::Usage(format!("cannot connect to the database: {e}")))?;
        let tenants = match tenant {
            Some(t) => vec![t],
            None => schema.tenants(&mut conn).await.map_err(db)?,
        };
        if tenants.is_empty() {
            return Err(Failure::Verification(
                "INCOMPLETE: no tenant has a log in this database".into(),
            ));
        }
        let (mut report, mut failed) = (String::new(), false);
        for t in tenants {
            let verdict = schema
                .verify(&mut conn, t, key, external)
                .await
                .map_err(db)?;
            let line = match judge(verdict, external.is_some(), args.origin.as_deref()) {
                Ok(ok) => ok,
                Err(Failure::Verification(bad)) => {
                    failed = true;
                    bad
                }
                Err(usage) => return Err(usage),
            };
            report.push_str(&format!("tenant {t}: {line}\n"));
        }
        let report = report.trim_end().to_owned();
        if failed {
            Err(Failure::Verification(report))
        } else {
            Ok(report)
        }
    })
}

fn main() -> ExitCode {
    let outcome = parse_args(std::env::args().skip(1)).and_then(|args| run(&args));
    match outcome {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure::Verification(msg)) => {
            println!("{msg}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("nova-audit: {msg}");
            ExitCode::from(2)
        }
    }
}
