//! Policies in force, per tenant, with hot reload. Readers take a snapshot with one atomic load
//! and never wait; writers validate and compile a new state off to the side and swap it in
//! whole, so a reader sees either the old policies or the new ones, never a mix. An invalid
//! update is refused and what was in force stays in force.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use foldhash::HashMap;
use nova_tenancy::{Actor, SecurityEvent, TenantContext, TenantId, report};

use crate::ast::Grant;
use crate::compiled::{CompiledPolicy, Decision, Explanation, Request};
use crate::policy_set::PolicySet;
use crate::schema::Schema;
use crate::validate::{PolicyError, compile};

#[derive(Debug)]
struct TenantEntry {
    /// The tenant's own roles, rules and grants, layered over the shared set.
    own: PolicySet,
    compiled: Arc<CompiledPolicy>,
}

#[derive(Debug)]
struct State {
    shared: Arc<CompiledPolicy>,
    tenants: HashMap<TenantId, Arc<TenantEntry>>,
}

/// The policies in force for every tenant: one shared set, and for each tenant that has any,
/// its own roles, rules and grants layered over it.
///
/// A tenant's decisions use the shared set plus that tenant's own items, compiled together;
/// no other tenant's items are ever in that compiled set, so a decision for tenant A cannot
/// use tenant B's rules or grants.
///
/// ```
/// use nova_policy::{Attrs, Grant, PolicySet, PolicyStore, Request, Schema};
/// use nova_tenancy::{Actor, SecurityEvent, TenantContext, TenantId, report};
///
/// let schema = Schema::parse("entity User {}; entity Ticket { department: String }; principal User;")?;
/// let store = PolicyStore::new(schema, PolicySet::parse("role admin;")?)?;
/// let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
/// store.set_tenant(a, PolicySet::parse("allow admin to read on Ticket;")?)?;
///
/// let me = Attrs::new();
/// let req = Request::new("read", "Ticket").principal("u-1", &["admin"], &me);
/// assert!(store.decide(a, &req).is_allowed());
/// assert!(!store.decide(b, &req).is_allowed());
///
/// // An invalid update is refused; the old policy stays in force.
/// assert!(store.set_tenant(a, PolicySet::parse("allow nobody to read on Ticket;")?).is_err());
/// assert!(store.decide(a, &req).is_allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PolicyStore {
    schema: Arc<Schema>,
    state: ArcSwap<State>,
    /// Serialises writers; readers never take it.
    write: Mutex<PolicySet>,
}

impl PolicyStore {
    /// A store whose shared set is `shared`.
    ///
    /// # Errors
    /// [`PolicyError`] when `shared` does not validate against `schema`.
    pub fn new(schema: Schema, shared: PolicySet) -> Result<Self, PolicyError> {
        let schema = Arc::new(schema);
        let compiled = Arc::new(compile(&shared, &schema)?);
        Ok(Self {
            schema,
            state: ArcSwap::from_pointee(State {
                shared: compiled,
                tenants: HashMap::default(),
            }),
            write: Mutex::new(shared),
        })
    }

    /// The schema every set is validated against.
    #[must_use]
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Whether a rule of the shared set names `action` (a rule for `*` names every action):
    /// for configuration that lists actions, so that a misspelt one is caught at start.
    #[must_use]
    pub fn names_action(&self, action: &str) -> bool {
        self.lock().rules().iter().any(|r| match &r.actions {
            crate::ast::Actions::Any => true,
            crate::ast::Actions::Named(names) => names.iter().any(|n| &**n == action),
        })
    }

    /// The compiled set in force for `tenant` (the shared one if it has none of its own). Hold
    /// it to make many decisions from one consistent version.
    #[must_use]
    pub fn policy(&self, tenant: TenantId) -> Arc<CompiledPolicy> {
        let state = self.state.load();
        match state.tenants.get(&tenant) {
            Some(e) => Arc::clone(&e.compiled),
            None => Arc::clone(&state.shared),
        }
    }

    /// Decides for `tenant` without explanation.
    pub fn decide(&self, tenant: TenantId, req: &Request<'_>) -> Decision {
        let state = self.state.load();
        match state.tenants.get(&tenant) {
            Some(e) => e.compiled.decide(req),
            None => state.shared.decide(req),
        }
    }

    /// Decides for `tenant` and says why.
    pub fn explain(&self, tenant: TenantId, req: &Request<'_>) -> Explanation {
        let state = self.state.load();
        match state.tenants.get(&tenant) {
            Some(e) => e.compiled.explain(req),
            None => state.shared.explain(req),
        }
    }

    /// Decides for a verified caller in its own tenant, and reports to the audit hook (see
    /// [`nova_tenancy::set_audit_hook`]) every denial (`policy_denied`) and every use of a
    /// delegation (`policy_delegation_used`), with the rules or grants involved and the policy
    /// version. Use it at the request boundary; use [`PolicyStore::decide`] or a
    /// [`CompiledPolicy`] directly for bulk filtering, where a deny is not an event.
    ///
    /// ```
    /// use nova_policy::{PolicySet, PolicyStore, Request, Schema};
    /// use nova_tenancy::{TenantContext, TenantId};
    /// let store = PolicyStore::new(Schema::parse("entity Ticket {};")?, PolicySet::parse("role agent;")?)?;
    /// let ctx = TenantContext::system(TenantId::new_v4(), "example")?;
    /// let e = store.authorize(&ctx, &Request::new("read", "Ticket"));
    /// assert!(!e.is_allowed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn authorize(&self, ctx: &TenantContext, req: &Request<'_>) -> Explanation {
        let e = self.explain(ctx.tenant(), req);
        let name = if !e.is_allowed() {
            "policy_denied"
        } else if e.used_delegation() {
            "policy_delegation_used"
        } else {
            return e;
        };
        let reasons = e
            .reasons()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let version = e.decision.version();
        let (action, resource_type) = (req.action(), req.resource_type());
        let details: [(&'static str, &dyn std::fmt::Display); 4] = [
            ("action", &action),
            ("resource_type", &resource_type),
            ("policy_version", &version),
            ("reasons", &reasons),
        ];
        let mut event = SecurityEvent::new(name)
            .tenant(ctx.tenant())
            .request_id(ctx.request_id())
            .details(&details);
        if let Some(user) = ctx.user() {
            event = event.actor(Actor::User(user));
        }
        report(&event);
        e
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PolicySet> {
        // A writer that panicked left nothing half-done: the swap is the only mutation.
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the shared set. Every tenant's layered set is recompiled; if the new shared set
    /// or any tenant's layering fails to validate, nothing changes (the error names the
    /// tenant). A tenant's own items can therefore hold back a shared update that clashes with
    /// them (say, both declare a role): fix or remove that tenant's set first.
    ///
    /// # Errors
    /// [`PolicyError`] for the shared set, or [`PolicyError::Tenant`] naming the first tenant
    /// whose layered set failed.
    pub fn set_shared(&self, shared: PolicySet) -> Result<(), PolicyError> {
        let mut current = self.lock();
        let compiled = Arc::new(compile(&shared, &self.schema)?);
        let old = self.state.load_full();
        let mut tenants = HashMap::default();
        for (tenant, entry) in &old.tenants {
            let layered = compile(&shared.merged(&entry.own), &self.schema).map_err(|error| {
                PolicyError::Tenant {
                    tenant: *tenant,
                    error: Box::new(error),
                }
            })?;
            let layered = Arc::new(layered);
            tenants.insert(
                *tenant,
                Arc::new(TenantEntry {
                    own: entry.own.clone(),
                    compiled: layered,
                }),
            );
        }
        self.state.store(Arc::new(State {
            shared: compiled,
            tenants,
        }));
        *current = shared;
        Ok(())
    }

    /// Replaces `tenant`'s own roles, rules and grants.
    ///
    /// # Errors
    /// [`PolicyError`] when the layered set does not validate; the old one stays in force.
    pub fn set_tenant(&self, tenant: TenantId, own: PolicySet) -> Result<(), PolicyError> {
        let shared = self.lock();
        self.put_tenant(&shared, tenant, own)
    }

    fn put_tenant(
        &self,
        shared: &PolicySet,
        tenant: TenantId,
        own: PolicySet,
    ) -> Result<(), PolicyError> {
        let compiled = Arc::new(compile(&shared.merged(&own), &self.schema)?);
        let old = self.state.load_full();
        let mut tenants = old.tenants.clone();
        tenants.insert(tenant, Arc::new(TenantEntry { own, compiled }));
        self.state.store(Arc::new(State {
            shared: Arc::clone(&old.shared),
            tenants,
        }));
        Ok(())
    }

    /// Removes `tenant`'s own items; it falls back to the shared set.
    pub fn remove_tenant(&self, tenant: TenantId) {
        let _guard = self.lock();
        let old = self.state.load_full();
        let mut tenants = old.tenants.clone();
        if tenants.remove(&tenant).is_some() {
            self.state.store(Arc::new(State {
                shared: Arc::clone(&old.shared),
                tenants,
            }));
        }
    }

    /// Adds a delegation grant for `tenant` only.
    ///
    /// # Errors
    /// [`PolicyError`] when the grant does not validate (unknown role or type, duplicate id…).
    pub fn grant(&self, tenant: TenantId, grant: Grant) -> Result<(), PolicyError> {
        let shared = self.lock();
        let own = self.own(tenant).grant(grant);
        self.put_tenant(&shared, tenant, own)
    }

    /// Revokes `tenant`'s grant `id`; returns whether it existed.
    ///
    /// # Errors
    /// [`PolicyError`] only if the remaining set no longer validates (it always should).
    pub fn revoke(&self, tenant: TenantId, id: &str) -> Result<bool, PolicyError> {
        let shared = self.lock();
        let mut own = self.own(tenant);
        if !own.remove_grant(id) {
            return Ok(false);
        }
        self.put_tenant(&shared, tenant, own)?;
        Ok(true)
    }

    fn own(&self, tenant: TenantId) -> PolicySet {
        self.state
            .load()
            .tenants
            .get(&tenant)
            .map(|e| e.own.clone())
            .unwrap_or_default()
    }
}
