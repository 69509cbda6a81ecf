//! Decision latency and throughput: Nova against cedar-policy and casbin on one workload.
//!
//! ```sh
//! cargo bench -p nova-policy --features peers --bench decide
//! ```
//!
//! The workload (`workload/mod.rs`) is generated from a seed (`NOVA_BENCH_SEED`, default
//! below): 50 roles with inheritance up to four levels, 500 rules over 20 resource types and
//! 6 actions (10% with an attribute condition, 5% denies), 300 principals holding 1–3 roles,
//! and 10,000 request tuples. It is rendered into each engine's own terms, every request is
//! prebuilt outside the timed region, and the three engines must agree on every tuple before
//! anything is timed.
//!
//! Run without `--bench` (e.g. `cargo test --benches --features peers`) it only checks that
//! the engines agree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod workload;

use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use casbin::prelude::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};
use casbin::rhai::{Dynamic, INT, Map};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet as CedarPolicySet, Request as CedarRequest, RestrictedExpression,
};
use nova_policy::{Attrs, CompiledPolicy, PolicySet, Reason, Request, Schema};

use workload::{ACTIONS, Cond, DEPTS, Effect, TYPES, Who, Workload};

const DEFAULT_SEED: u64 = 0x00C0_FFEE_2024;

/// Time spent per engine on individually timed decisions (whole passes, at least one).
const LATENCY_BUDGET: Duration = Duration::from_secs(4);
/// Time spent per engine on whole-pass throughput runs (whole passes, at least one).
const THROUGHPUT_BUDGET: Duration = Duration::from_secs(2);
/// Upper bound on passes, so a fast engine does not collect samples forever.
const MAX_PASSES: usize = 25;

fn main() {
    let timing = std::env::args().any(|a| a == "--bench");
    let seed = std::env::var("NOVA_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);

    let setup = Instant::now();
    let w = Workload::generate(seed);
    let n = w.tuples.len();

    // ---------------------------------------------------------------- Nova
    let schema = Schema::parse(&w.nova_schema_text()).expect("Nova schema");
    let nova: CompiledPolicy = PolicySet::parse(&w.nova_policy_text())
        .expect("Nova policy parses")
        .compile(&schema)
        .expect("Nova policy compiles");
    let role_lists: Vec<Vec<&str>> = w
        .principals
        .iter()
        .map(|p| p.roles.iter().map(|&r| w.roles[r].name.as_str()).collect())
        .collect();
    let nova_principals: Vec<Attrs> = w
        .tuples
        .iter()
        .map(|t| {
            let p = &w.principals[t.principal];
            Attrs::new()
                .with("dept", DEPTS[p.dept])
                .with("uid", p.uid.as_str())
        })
        .collect();
    let nova_resources: Vec<Attrs> = w
        .tuples
        .iter()
        .map(|t| {
            Attrs::new()
                .with("dept", DEPTS[t.dept])
                .with("priority", t.priority)
                .with("owner", t.owner.as_str())
        })
        .collect();
    let nova_reqs: Vec<Request<'_>> = w
        .tuples
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Request::new(ACTIONS[t.action], TYPES[t.rtype])
                .principal(
                    &w.principals[t.principal].uid,
                    &role_lists[t.principal],
                    &nova_principals[i],
                )
                .resource(&nova_resources[i])
        })
        .collect();

    // ---------------------------------------------------------------- hand-written index
    // The machine's limit (SPEC, "Measured speed"): rules keyed by (type, action), role
    // inheritance folded into one bitmask per rule, conditions as native Rust on typed
    // fields. It takes the same role names, action and type strings as Nova.
    let hand = HandIndex::new(&w);
    let hand_inputs: Vec<HandInput<'_>> = w
        .tuples
        .iter()
        .map(|t| HandInput {
            roles: &role_lists[t.principal],
            action: ACTIONS[t.action],
            rtype: TYPES[t.rtype],
            p_dept: DEPTS[w.principals[t.principal].dept],
            p_uid: &w.principals[t.principal].uid,
            r_dept: DEPTS[t.dept],
            r_priority: t.priority,
            r_owner: &t.owner,
        })
        .collect();
    let hand_disagreements = (0..n)
        .filter(|&i| hand.decide(&hand_inputs[i]) != nova.is_allowed(&nova_reqs[i]))
        .count();

    // ---------------------------------------------------------------- Cedar
    let cedar_policies =
        CedarPolicySet::from_str(&w.cedar_policy_text()).expect("Cedar policy parses");
    // The same policies sliced into one set per resource type: Cedar evaluates every policy
    // in the set it is given, so this is what a Cedar user would do to avoid paying for
    // the 95% of policies that can never apply (an extra row; it must agree too).
    let cedar_sliced: Vec<CedarPolicySet> = (0..TYPES.len())
        .map(|ty| {
            CedarPolicySet::from_str(&w.cedar_policy_text_for(|r| r.rtype == ty))
                .expect("sliced Cedar policy parses")
        })
        .collect();
    let authorizer = Authorizer::new();
    let (cedar_reqs, cedar_entities) = cedar_requests(&w);

    // ---------------------------------------------------------------- casbin
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let casbin_policies = w.casbin_policies();
    let casbin_groupings = w.casbin_groupings();
    let (p_lines, g_lines) = (casbin_policies.len(), casbin_groupings.len());
    let enforcer = rt.block_on(async {
        let model = DefaultModel::from_str(Workload::CASBIN_MODEL)
            .await
            .expect("casbin model");
        let mut e = Enforcer::new(model, MemoryAdapter::default())
            .await
            .expect("casbin enforcer");
        assert!(
            e.add_policies(casbin_policies)
                .await
                .expect("casbin p lines")
        );
        assert!(
            e.add_grouping_policies(casbin_groupings)
                .await
                .expect("casbin g lines")
        );
        e
    });
    let casbin_args: Vec<Vec<Dynamic>> = w.tuples.iter().map(|t| casbin_args(&w, t)).collect();
    let setup = setup.elapsed();

    // ---------------------------------------------------------------- agreement
    print_workload(&w, &nova, p_lines, g_lines, setup);
    let check = Instant::now();
    let agreement = check_agreement(
        &w,
        &nova,
        &nova_reqs,
        |i| {
            authorizer
                .is_authorized(&cedar_reqs[i], &cedar_policies, &cedar_entities[i])
                .decision()
                == Decision::Allow
        },
        |i| {
            enforcer
                .enforce(casbin_args[i].clone())
                .map_err(|e| e.to_string())
        },
    );
    println!(
        "agreement check over {n} tuples took {:.1?}",
        check.elapsed()
    );
    assert_eq!(
        agreement.nova_cedar, 0,
        "Nova and Cedar disagree; see the examples printed above"
    );
    assert_eq!(agreement.nova_explain, 0, "is_allowed and explain disagree");
    println!("hand-written index vs Nova: {hand_disagreements} disagreements");
    assert_eq!(
        hand_disagreements, 0,
        "the hand-written index and Nova disagree"
    );
    if !timing {
        println!("(not run with --bench: agreement checked, nothing timed)");
        return;
    }

    // ---------------------------------------------------------------- timing
    let overhead = timer_overhead();
    println!(
        "\ntimer: an empty `Instant::now()` pair costs {overhead} ns (median of 200,000); \
         subtracted from every sample"
    );

    let mut rows = Vec::new();
    rows.push(bench_engine(
        "Nova is_allowed",
        n,
        overhead,
        |_| (),
        |i, ()| nova.is_allowed(&nova_reqs[i]),
    ));
    rows.push(bench_engine(
        "Nova explain",
        n,
        overhead,
        |_| (),
        |i, ()| nova.explain(&nova_reqs[i]).is_allowed(),
    ));
    rows.push(bench_engine(
        "hand-written index",
        n,
        overhead,
        |_| (),
        |i, ()| hand.decide(&hand_inputs[i]),
    ));
    rows.push(bench_engine(
        "cedar-policy 4.14.1",
        n,
        overhead,
        |_| (),
        |i, ()| {
            authorizer
                .is_authorized(&cedar_reqs[i], &cedar_policies, &cedar_entities[i])
                .decision()
                == Decision::Allow
        },
    ));
    rows.push(bench_engine(
        "cedar, sliced by type",
        n,
        overhead,
        |_| (),
        |i, ()| {
            authorizer
                .is_authorized(
                    &cedar_reqs[i],
                    &cedar_sliced[w.tuples[i].rtype],
                    &cedar_entities[i],
                )
                .decision()
                == Decision::Allow
        },
    ));
    // casbin's `enforce` takes its arguments by value: the prebuilt argument vector is cloned
    // before the timer starts, so only the call itself is timed.
    rows.push(bench_engine(
        "casbin 2.20.0",
        n,
        overhead,
        |i| casbin_args[i].clone(),
        |_, args| enforcer.enforce(args).unwrap_or(false),
    ));

    print_table(&rows, n);
    explain_breakdown(&nova, &nova_reqs, overhead);
}

/// `explain` ÷ `is_allowed` separately on the allowed and the denied tuples (same per-decision
/// method as the table: each tuple timed over 32 repetitions, timer cost subtracted, 10 passes).
fn explain_breakdown(nova: &CompiledPolicy, reqs: &[Request<'_>], overhead: u64) {
    let median = |subset: &[&Request<'_>], explain: bool| {
        // As in the table: each sample repeats one decision 32 times, to see past the
        // clock's resolution.
        const REPS: u32 = 32;
        let mut v = Vec::with_capacity(subset.len() * 10);
        for _ in 0..10 {
            for req in subset {
                let t0 = Instant::now();
                for _ in 0..REPS {
                    let allowed = if explain {
                        nova.explain(black_box(req)).is_allowed()
                    } else {
                        nova.is_allowed(black_box(req))
                    };
                    black_box(allowed);
                }
                let t1 = Instant::now();
                v.push(nanos(t1 - t0).saturating_sub(overhead) as f64 / f64::from(REPS));
            }
        }
        v.sort_unstable_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (label, want) in [("allowed", true), ("denied", false)] {
        let subset: Vec<&Request<'_>> =
            reqs.iter().filter(|r| nova.is_allowed(r) == want).collect();
        let (fast, slow) = (median(&subset, false), median(&subset, true));
        println!(
            "  on the {} {label} tuples: is_allowed {}, explain {} median: {:.2}×",
            subset.len(),
            fmt_ns(fast),
            fmt_ns(slow),
            slow / fast.max(1.0)
        );
    }
}

// -------------------------------------------------------------------- engine inputs

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(ty).expect("type name"),
        EntityId::new(id),
    )
}

/// One Cedar request and entity store per tuple: the user (with its direct roles as
/// parents), every role it inherits (with their parents, so Cedar computes the transitive
/// closure when the store is built), and the resource.
fn cedar_requests(w: &Workload) -> (Vec<CedarRequest>, Vec<Entities>) {
    let role_uids: Vec<EntityUid> = w.roles.iter().map(|r| uid("Role", &r.name)).collect();
    let action_uids: Vec<EntityUid> = ACTIONS.iter().map(|a| uid("Action", a)).collect();
    let mut reqs = Vec::with_capacity(w.tuples.len());
    let mut stores = Vec::with_capacity(w.tuples.len());
    for t in &w.tuples {
        let p = &w.principals[t.principal];
        let user = uid("User", &p.uid);
        let resource = uid(TYPES[t.rtype], &t.rid);
        let mut closure = HashSet::new();
        for &r in &p.roles {
            w.closure(r, &mut closure);
        }
        let mut entities = Vec::with_capacity(closure.len() + 2);
        entities.push(
            Entity::new(
                user.clone(),
                HashMap::from([
                    (
                        "dept".to_owned(),
                        RestrictedExpression::new_string(DEPTS[p.dept].to_owned()),
                    ),
                    (
                        "uid".to_owned(),
                        RestrictedExpression::new_string(p.uid.clone()),
                    ),
                ]),
                p.roles.iter().map(|&r| role_uids[r].clone()).collect(),
            )
            .expect("user entity"),
        );
        for &r in &closure {
            entities.push(Entity::new_no_attrs(
                role_uids[r].clone(),
                w.roles[r]
                    .parents
                    .iter()
                    .map(|&q| role_uids[q].clone())
                    .collect(),
            ));
        }
        entities.push(
            Entity::new(
                resource.clone(),
                HashMap::from([
                    (
                        "dept".to_owned(),
                        RestrictedExpression::new_string(DEPTS[t.dept].to_owned()),
                    ),
                    (
                        "priority".to_owned(),
                        RestrictedExpression::new_long(t.priority),
                    ),
                    (
                        "owner".to_owned(),
                        RestrictedExpression::new_string(t.owner.clone()),
                    ),
                ]),
                HashSet::new(),
            )
            .expect("resource entity"),
        );
        stores.push(Entities::from_entities(entities, None).expect("Cedar entities"));
        reqs.push(
            CedarRequest::new(
                user,
                action_uids[t.action].clone(),
                resource,
                Context::empty(),
                None,
            )
            .expect("Cedar request"),
        );
    }
    (reqs, stores)
}

/// casbin's request `(sub, obj, act)`: `sub` and `obj` are rhai maps, which the matcher and
/// the `eval()`ed conditions read as `r.sub.dept`, `r.obj.priority` and so on.
fn casbin_args(w: &Workload, t: &workload::Tuple) -> Vec<Dynamic> {
    let p = &w.principals[t.principal];
    let mut sub = Map::new();
    sub.insert("uid".into(), p.uid.clone().into());
    sub.insert("dept".into(), DEPTS[p.dept].into());
    let mut obj = Map::new();
    obj.insert("rtype".into(), TYPES[t.rtype].into());
    obj.insert("dept".into(), DEPTS[t.dept].into());
    obj.insert(
        "priority".into(),
        Dynamic::from(INT::try_from(t.priority).expect("small priority")),
    );
    obj.insert("owner".into(), t.owner.clone().into());
    vec![
        Dynamic::from_map(sub),
        Dynamic::from_map(obj),
        ACTIONS[t.action].into(),
    ]
}

// -------------------------------------------------------------------- agreement

struct Agreement {
    nova_cedar: usize,
    nova_explain: usize,
}

fn check_agreement(
    w: &Workload,
    nova: &CompiledPolicy,
    reqs: &[Request<'_>],
    cedar: impl Fn(usize) -> bool,
    casbin: impl Fn(usize) -> Result<bool, String>,
) -> Agreement {
    let conditional: HashSet<&str> = w
        .rules
        .iter()
        .filter(|r| r.cond.is_some())
        .map(|r| r.id.as_str())
        .collect();
    let (mut allow, mut nova_cedar, mut nova_casbin, mut casbin_err, mut nova_explain) =
        (0, 0, 0, 0, 0);
    let (mut by_deny, mut by_cond_deny, mut no_rules, mut only_cond_allow, mut cond_false) =
        (0, 0, 0, 0, 0);
    let mut examples = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        let a = nova.is_allowed(req);
        let why = nova.explain(req);
        let c = cedar(i);
        let k = casbin(i);
        allow += usize::from(a);
        nova_explain += usize::from(why.is_allowed() != a);
        let mut denied_by_rule = false;
        let mut allowers = 0;
        let mut cond_allowers = 0;
        let mut saw_cond_false = false;
        for r in why.reasons() {
            match r {
                Reason::Denied { rule } | Reason::DeniedOnError { rule, .. } => {
                    denied_by_rule = true;
                    by_cond_deny += usize::from(conditional.contains(&**rule));
                }
                Reason::Allowed { rule } => {
                    allowers += 1;
                    cond_allowers += usize::from(conditional.contains(&**rule));
                }
                Reason::NoRules { .. } => no_rules += 1,
                Reason::ConditionFalse { .. } => saw_cond_false = true,
                _ => {}
            }
        }
        by_deny += usize::from(denied_by_rule);
        only_cond_allow += usize::from(allowers > 0 && allowers == cond_allowers);
        cond_false += usize::from(!a && !denied_by_rule && saw_cond_false);
        if c != a {
            nova_cedar += 1;
            if examples.len() < 5 {
                examples.push(format!(
                    "  tuple {i}: Nova {a}, Cedar {c}; Nova says: {why}"
                ));
            }
        }
        match k {
            Ok(k) if k == a => {}
            Ok(k) => {
                nova_casbin += 1;
                if examples.len() < 10 {
                    examples.push(format!(
                        "  tuple {i}: Nova {a}, casbin {k}; Nova says: {why}"
                    ));
                }
            }
            Err(e) => {
                casbin_err += 1;
                if examples.len() < 10 {
                    examples.push(format!("  tuple {i}: casbin error: {e}"));
                }
            }
        }
    }
    let n = reqs.len();
    let pct = |x: usize| 100.0 * x as f64 / n as f64;
    println!(
        "\ndecisions: {allow} allow ({:.1}%), {} deny ({:.1}%)",
        pct(allow),
        n - allow,
        pct(n - allow)
    );
    println!(
        "  deny by an explicit deny rule: {by_deny} ({by_cond_deny} of them by a conditional \
         deny); default deny with no rule for the action and type: {no_rules}; default deny \
         where a covering rule's condition was false: {cond_false}"
    );
    println!("  allowed only through conditional rules: {only_cond_allow}");
    println!(
        "disagreements: Nova vs Cedar {nova_cedar}, Nova vs casbin {nova_casbin} (+ {casbin_err} \
         casbin errors), Nova is_allowed vs explain {nova_explain}"
    );
    for e in &examples {
        println!("{e}");
    }
    Agreement {
        nova_cedar,
        nova_explain,
    }
}

// -------------------------------------------------------------------- timing

/// The median cost of an empty pair of `Instant::now()` calls.
fn timer_overhead() -> u64 {
    let mut v: Vec<u64> = (0..200_000)
        .map(|_| {
            let a = Instant::now();
            let b = black_box(Instant::now());
            nanos(b - a)
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2]
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

struct Row {
    name: &'static str,
    passes: usize,
    median_ns: f64,
    p99_ns: f64,
    mean_ns: f64,
    per_sec: f64,
}

/// Times one engine.
///
/// Latency: every tuple is timed on its own with a pair of `Instant::now()` calls, over
/// whole passes of the tuples in order, for about `LATENCY_BUDGET`; the median cost of an
/// empty pair is subtracted from each sample, so the figures are the decision's own cost.
/// Timing per tuple (rather than over batches of different tuples) keeps the real tail,
/// which batching would average away. The clock reads in steps of about 10 ns here, so for
/// engines that decide in tens of nanoseconds each sample repeats the same tuple's decision
/// enough times to last about 1 µs and divides (warm caches, as in a service deciding the
/// same shapes of request all day). `prep` runs outside the timer (casbin's argument clone);
/// its result is handed to `decide` through `black_box`.
///
/// Throughput: whole passes timed as one span each (no per-decision timer), for about
/// `THROUGHPUT_BUDGET`; decisions per second is tuples ÷ the median pass time. For casbin
/// the pass's arguments are cloned in advance, so here too only `enforce` runs in the span.
fn bench_engine<S>(
    name: &'static str,
    n: usize,
    overhead: u64,
    prep: impl Fn(usize) -> S,
    decide: impl Fn(usize, S) -> bool,
) -> Row {
    // A warm-up pass, which also sizes the runs.
    let warm = Instant::now();
    for i in 0..n {
        black_box(decide(i, black_box(prep(i))));
    }
    let pass = warm.elapsed().max(Duration::from_micros(1));
    let passes_for = |budget: Duration| {
        usize::try_from(budget.as_nanos() / pass.as_nanos())
            .unwrap_or(MAX_PASSES)
            .clamp(1, MAX_PASSES)
    };

    // The clock's resolution here is about 10 ns, too coarse for decisions that take tens of
    // nanoseconds: each sample repeats one tuple's decision `reps` times (enough for about
    // 1 µs) and divides. A slow tuple stays slow in every repetition, so the spread across
    // tuples (median, p99) is kept; engines in the microseconds use one repetition.
    let per_decision = pass.as_nanos() / n as u128;
    let reps = usize::try_from((1_000 / per_decision.max(1)).clamp(1, 64)).unwrap_or(1);
    let passes = usize::try_from(LATENCY_BUDGET.as_nanos() / (pass.as_nanos() * reps as u128))
        .unwrap_or(1)
        .clamp(1, MAX_PASSES);
    let mut samples = Vec::with_capacity(passes * n);
    for _ in 0..passes {
        for i in 0..n {
            let inputs: Vec<S> = (0..reps).map(|_| black_box(prep(i))).collect();
            let t0 = Instant::now();
            for s in inputs {
                black_box(decide(i, s));
            }
            let t1 = Instant::now();
            samples.push(nanos(t1 - t0).saturating_sub(overhead) as f64 / reps as f64);
        }
    }
    samples.sort_unstable_by(f64::total_cmp);
    let q = |f: f64| samples[((samples.len() - 1) as f64 * f).round() as usize];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;

    let mut pass_times = Vec::new();
    for _ in 0..passes_for(THROUGHPUT_BUDGET) {
        let inputs: Vec<S> = (0..n).map(&prep).collect();
        let t0 = Instant::now();
        for (i, s) in inputs.into_iter().enumerate() {
            black_box(decide(i, s));
        }
        pass_times.push(t0.elapsed());
    }
    pass_times.sort_unstable();
    let median_pass = pass_times[pass_times.len() / 2];

    Row {
        name,
        passes,
        median_ns: q(0.5),
        p99_ns: q(0.99),
        mean_ns: mean,
        per_sec: n as f64 / median_pass.as_secs_f64(),
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

fn print_table(rows: &[Row], n: usize) {
    let base = &rows[0];
    println!(
        "\n{:<22} {:>7} {:>10} {:>10} {:>10} {:>13} {:>12}",
        "engine", "samples", "median", "p99", "mean", "decisions/s", "median ÷ Nova"
    );
    println!("{}", "-".repeat(91));
    for r in rows {
        println!(
            "{:<22} {:>7} {:>10} {:>10} {:>10} {:>13} {:>12.1}×",
            r.name,
            format!("{}×{}k", r.passes, n / 1000),
            fmt_ns(r.median_ns),
            fmt_ns(r.p99_ns),
            fmt_ns(r.mean_ns),
            fmt_rate(r.per_sec),
            r.median_ns / base.median_ns.max(1.0),
        );
    }
    if let Some(hand) = rows.iter().find(|r| r.name == "hand-written index") {
        let by_median = base.median_ns / hand.median_ns.max(1.0);
        let by_rate = hand.per_sec / base.per_sec;
        let verdict = |x: f64| if x <= 1.5 { "meets" } else { "MISSES" };
        println!(
            "\nNova is_allowed ÷ hand-written index: {by_median:.2}× by median latency ({} the \
             ≤ 1.5× goal), {by_rate:.2}× by throughput ({} it)",
            verdict(by_median),
            verdict(by_rate)
        );
    }
    if let Some(explain) = rows.iter().find(|r| r.name == "Nova explain") {
        let by_median = explain.median_ns / base.median_ns.max(1.0);
        let by_rate = base.per_sec / explain.per_sec;
        let verdict = |x: f64| if x <= 1.5 { "meets" } else { "MISSES" };
        println!(
            "\nNova explain ÷ is_allowed: {by_median:.2}× by median latency ({} the ≤ 1.5× goal), \
             {by_rate:.2}× by throughput ({} it)",
            verdict(by_median),
            verdict(by_rate)
        );
    }
}

fn print_workload(
    w: &Workload,
    nova: &CompiledPolicy,
    p_lines: usize,
    g_lines: usize,
    setup: Duration,
) {
    let levels = w.level_counts();
    let denies = w
        .rules
        .iter()
        .filter(|r| r.effect == workload::Effect::Deny)
        .count();
    let conds = w.rules.iter().filter(|r| r.cond.is_some()).count();
    let multi = w
        .rules
        .iter()
        .filter(|r| matches!(&r.who, workload::Who::Roles(v) if v.len() > 1))
        .count();
    let anyone = w
        .rules
        .iter()
        .filter(|r| r.who == workload::Who::Anyone)
        .count();
    println!("nova-policy decide benchmark (seed {:#x})", w.seed);
    println!(
        "workload: {} roles (per level 0..3: {levels:?}), {} rules over {} types × {} actions \
         ({denies} deny, {conds} with a condition, {multi} naming two roles, {anyone} for `*`), \
         {} principals, {} tuples",
        w.roles.len(),
        nova.rule_count(),
        TYPES.len(),
        ACTIONS.len(),
        w.principals.len(),
        w.tuples.len()
    );
    println!(
        "casbin: {p_lines} `p` lines (one per rule × role × action), {g_lines} `g` lines; \
         setup of all three engines and inputs took {setup:.1?}"
    );
}

/// One request as a hand-written authorizer would take it: role names and typed fields.
struct HandInput<'a> {
    roles: &'a [&'a str],
    action: &'a str,
    rtype: &'a str,
    p_dept: &'a str,
    p_uid: &'a str,
    r_dept: &'a str,
    r_priority: i64,
    r_owner: &'a str,
}

struct HandRule {
    deny: bool,
    /// Roles whose holders the rule applies to (inheritance folded in); all ones for `*`.
    holders: u64,
    cond: Option<Cond>,
}

/// What a careful engineer would write by hand for this workload: the baseline Nova's
/// general evaluator is measured against.
struct HandIndex {
    roles: foldhash::HashMap<&'static str, u32>,
    buckets: foldhash::HashMap<(&'static str, &'static str), Vec<HandRule>>,
}

impl HandIndex {
    fn new(w: &Workload) -> Self {
        assert!(w.roles.len() <= 64, "one u64 mask per rule");
        let roles = w
            .roles
            .iter()
            .enumerate()
            .map(|(i, r)| (&*r.name.clone().leak(), u32::try_from(i).unwrap()))
            .collect();
        // holders[r]: every role whose closure contains r.
        let mut holders = vec![0u64; w.roles.len()];
        for r in 0..w.roles.len() {
            let mut closure = HashSet::new();
            w.closure(r, &mut closure);
            for a in closure {
                holders[a] |= 1 << r;
            }
        }
        let mut buckets: foldhash::HashMap<(&'static str, &'static str), Vec<HandRule>> =
            foldhash::HashMap::default();
        for rule in &w.rules {
            let mask = match &rule.who {
                Who::Anyone => u64::MAX,
                Who::Roles(rs) => rs.iter().fold(0, |m, &r| m | holders[r]),
            };
            for &a in &rule.actions {
                buckets
                    .entry((TYPES[rule.rtype], ACTIONS[a]))
                    .or_default()
                    .push(HandRule {
                        deny: rule.effect == Effect::Deny,
                        holders: mask,
                        cond: rule.cond,
                    });
            }
        }
        // Denies first, so the first one that holds ends the walk.
        for rules in buckets.values_mut() {
            rules.sort_by_key(|r| !r.deny);
        }
        Self { roles, buckets }
    }

    fn decide(&self, q: &HandInput<'_>) -> bool {
        let Some(rules) = self.buckets.get(&(q.rtype, q.action)) else {
            return false;
        };
        let mut mask = 0u64;
        for r in q.roles {
            if let Some(&i) = self.roles.get(r) {
                mask |= 1 << i;
            }
        }
        let mut allow = false;
        for rule in rules {
            if rule.holders != u64::MAX && rule.holders & mask == 0 {
                continue;
            }
            if allow && !rule.deny {
                break;
            }
            let holds = match rule.cond {
                None => true,
                Some(Cond::SameDept) => q.r_dept == q.p_dept,
                Some(Cond::OtherDept) => q.r_dept != q.p_dept,
                Some(Cond::PriorityAtLeast(k)) => q.r_priority >= k,
                Some(Cond::Owner) => q.r_owner == q.p_uid,
                Some(Cond::SameDeptBelow(k)) => q.r_dept == q.p_dept && q.r_priority < k,
            };
            if holds {
                if rule.deny {
                    return false;
                }
                allow = true;
            }
        }
        allow
    }
}
