//! Nova's ids and names as sqlx column types, against the real PostgreSQL server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nova_tenancy::testing::PgFixture;
use nova_tenancy::{Region, RequestId, Role, TenantId, UserId};

#[tokio::test]
async fn ids_and_names_round_trip_through_their_column_types() {
    let Some(fx) = PgFixture::new("sqltypes").await else {
        return;
    };
    fx.exec(
        "CREATE TABLE memberships (tenant_id uuid, user_id uuid, request_id uuid, role text, region varchar(64))",
    )
    .await;
    let (t, u, r) = (TenantId::new_v4(), UserId::new_v4(), RequestId::generate());
    let role = Role::new("agent.tier-2").unwrap();
    let region = Region::new("eu-west").unwrap();
    sqlx::query("INSERT INTO memberships VALUES ($1, $2, $3, $4, $5)")
        .bind(t)
        .bind(u)
        .bind(r)
        .bind(&role)
        .bind(&region)
        .execute(fx.admin())
        .await
        .unwrap();
    let back: (TenantId, UserId, RequestId, Role, Region) =
        sqlx::query_as("SELECT tenant_id, user_id, request_id, role, region FROM memberships")
            .fetch_one(fx.admin())
            .await
            .unwrap();
    assert_eq!(back, (t, u, r, role.clone(), region));
    // The stored values are the canonical ones, comparable in SQL.
    let found: Vec<TenantId> = sqlx::query_scalar(
        "SELECT tenant_id FROM memberships WHERE tenant_id = ANY($1) AND role = $2",
    )
    .bind(vec![t, TenantId::new_v4()])
    .bind(&role)
    .fetch_all(fx.admin())
    .await
    .unwrap();
    assert_eq!(found, [t]);
    fx.cleanup().await;
}

#[tokio::test]
async fn values_outside_the_grammar_do_not_decode() {
    let Some(fx) = PgFixture::new("sqltypesbad").await else {
        return;
    };
    let nil =
        sqlx::query_scalar::<_, TenantId>("SELECT '00000000-0000-0000-0000-000000000000'::uuid")
            .fetch_one(fx.admin())
            .await;
    assert!(
        matches!(nil, Err(sqlx::Error::ColumnDecode { .. })),
        "{nil:?}"
    );
    for bad in ["Admin", "", "x y", "role;drop"] {
        let role = sqlx::query_scalar::<_, Role>("SELECT $1::text")
            .bind(bad)
            .fetch_one(fx.admin())
            .await;
        assert!(
            matches!(role, Err(sqlx::Error::ColumnDecode { .. })),
            "{bad:?}: {role:?}"
        );
    }
    // A uuid column is not a text column, and the other way round.
    let wrong = sqlx::query_scalar::<_, UserId>("SELECT 'agent'::text")
        .fetch_one(fx.admin())
        .await;
    assert!(wrong.is_err());
    fx.cleanup().await;
}
