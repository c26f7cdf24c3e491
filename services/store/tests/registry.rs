//! The registry import against the real PostgreSQL: idempotent, additive unless
//! pruning, and read back exactly.

use fleet_core::Registry;

const FILE: &str = r#"
[[clinic]]
id = "clinic-001"
name = "Northside Pain Center"
webhook = "http://127.0.0.1:50070"
escalation_after = "15m"

[[clinic]]
id = "clinic-002"
name = "Lakeside Neurology"
webhook = "https://lakeside.example:443"
escalation_after = "5m"
fallback_webhook = "http://127.0.0.1:50079"
signing_secret = "0123456789abcdef-lakeside"

[[pump]]
pump_id = "ITP40-100002"
gateway_id = "gw-100002"
clinic_id = "clinic-001"

[[pump]]
pump_id = "ITP20-100003"
gateway_id = "gw-100003"
clinic_id = "clinic-002"
"#;

async fn pool() -> sqlx::PgPool {
    fleet_store::testing::fresh_pool("registry").await.1
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn import_twice_changes_nothing_the_second_time() {
    let pool = pool().await;
    let registry = Registry::from_toml(FILE).expect("valid file");
    let first = fleet_store::registry::import(&pool, &registry, false)
        .await
        .expect("import");
    assert_eq!((first.clinics_added, first.pumps_added), (2, 2));
    assert_eq!(first.version, 1);
    let second = fleet_store::registry::import(&pool, &registry, false)
        .await
        .expect("import");
    assert!(!second.changed_anything(), "{second:?}");
    assert_eq!(second.version, 1, "the version moves only on a change");
    let (version, loaded) = fleet_store::registry::load(&pool).await.expect("load");
    assert_eq!((version, loaded), (1, registry));
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_partial_file_keeps_absent_entries_unless_pruning() {
    let pool = pool().await;
    let full = Registry::from_toml(FILE).expect("valid file");
    fleet_store::registry::import(&pool, &full, false)
        .await
        .expect("import");
    // Pump 100002 moves to another gateway; pump 100003 and clinic-002 are left out.
    let partial_text = FILE
        .split("[[clinic]]\nid = \"clinic-002\"")
        .next()
        .expect("first part")
        .replace("gw-100002", "gw-200002")
        + "\n[[pump]]\npump_id = \"ITP40-100002\"\ngateway_id = \"gw-200002\"\nclinic_id = \"clinic-001\"\n";
    let partial = Registry::from_toml(&partial_text).expect("valid partial file");
    let kept = fleet_store::registry::import(&pool, &partial, false)
        .await
        .expect("import");
    assert_eq!(kept.pumps_changed, 1);
    assert_eq!((kept.clinics_absent, kept.pumps_absent), (1, 1));
    let (_, loaded) = fleet_store::registry::load(&pool).await.expect("load");
    assert_eq!(loaded.pumps.len(), 2, "absent pump kept without --prune");
    assert_eq!(loaded.pumps["ITP40-100002"].gateway_id, "gw-200002");

    let pruned = fleet_store::registry::import(&pool, &partial, true)
        .await
        .expect("import");
    assert!(pruned.changed_anything());
    let (_, loaded) = fleet_store::registry::load(&pool).await.expect("load");
    assert_eq!(loaded, partial);
}
