//! The audit log against the real PostgreSQL: each row keeps the caller's address
//! (IPv4 or IPv6, or NULL without a network caller), an investigation can ask for a
//! whole network, and the log stays append-only, address included.

use std::net::IpAddr;

use serde_json::json;

async fn pool() -> sqlx::PgPool {
    fleet_store::testing::fresh_pool("audit").await.1
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn audit_rows_keep_the_callers_address_and_stay_append_only() {
    let pool = pool().await;
    let v4: IpAddr = "203.0.113.7".parse().expect("ip");
    let v6: IpAddr = "2001:db8::42".parse().expect("ip");
    for (actor, addr) in [("a", Some(v4)), ("b", Some(v6)), ("c", None)] {
        fleet_store::access::audit(&pool, actor, "login", actor, &json!({}), addr)
            .await
            .expect("audited");
    }
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT actor, host(caller_addr) FROM audit_log ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("read");
    assert_eq!(
        rows,
        vec![
            ("a".to_owned(), Some("203.0.113.7".to_owned())),
            ("b".to_owned(), Some("2001:db8::42".to_owned())),
            ("c".to_owned(), None),
        ]
    );
    let in_net: Vec<String> =
        sqlx::query_scalar("SELECT actor FROM audit_log WHERE caller_addr <<= '203.0.113.0/24'")
            .fetch_all(&pool)
            .await
            .expect("read");
    assert_eq!(in_net, vec!["a".to_owned()]);
    let rewrite = sqlx::query("UPDATE audit_log SET caller_addr = '192.0.2.1' WHERE actor = 'a'")
        .execute(&pool)
        .await;
    assert!(
        rewrite
            .expect_err("append-only")
            .to_string()
            .contains("append-only"),
    );
}
