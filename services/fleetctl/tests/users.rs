//! `fleetctl user add|rotate` against the real PostgreSQL: the printed token is the
//! one the API accepts, refusals name their reason, rotation retires the old token.

use std::process::{Command, Output};

use fleet_store::access::{self, Role};

fn fleetctl(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .env("FLEET_DATABASE_URL", database_url)
        .output()
        .expect("fleetctl runs")
}

fn token(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn refused(output: &Output, reason: &str) {
    assert_eq!(output.status.code(), Some(1), "refused with exit 1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(reason), "{stderr}");
    assert!(output.stdout.is_empty(), "no token printed");
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_printed_token_logs_in_as_its_user_until_rotated() {
    let (url, pool) = fleet_store::testing::fresh_pool("users").await;
    sqlx::query(
        "INSERT INTO clinic (id, name, webhook, escalation_after_ms)
         VALUES ('clinic-001', 'North', 'http://127.0.0.1:1', 60000)",
    )
    .execute(&pool)
    .await
    .expect("clinic");

    let nurse = token(&fleetctl(
        &url,
        &[
            "user",
            "add",
            "nurse",
            "--role",
            "clinic",
            "--clinic",
            "clinic-001",
        ],
    ));
    assert!(nurse.starts_with("fleet_") && nurse.len() > 40, "{nurse}");
    let user = access::user_for_token(&pool, &nurse)
        .await
        .expect("lookup")
        .expect("the token is the user's");
    assert_eq!(user.name, "nurse");
    assert_eq!(user.role, Role::Clinic("clinic-001".into()));
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_sha256 FROM api_user")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert!(
        !String::from_utf8_lossy(&stored).contains(&nurse[6..]),
        "only the hash is stored"
    );

    let maker = token(&fleetctl(
        &url,
        &["user", "add", "maker", "--role", "manufacturer"],
    ));
    let user = access::user_for_token(&pool, &maker).await.expect("lookup");
    assert_eq!(user.map(|u| u.role), Some(Role::Manufacturer));

    refused(
        &fleetctl(
            &url,
            &[
                "user",
                "add",
                "nurse",
                "--role",
                "clinic",
                "--clinic",
                "clinic-001",
            ],
        ),
        "user 'nurse' exists",
    );
    refused(
        &fleetctl(
            &url,
            &[
                "user",
                "add",
                "other",
                "--role",
                "clinic",
                "--clinic",
                "clinic-999",
            ],
        ),
        "no clinic 'clinic-999' in the registry",
    );
    refused(
        &fleetctl(&url, &["user", "add", "bad name", "--role", "manufacturer"]),
        "must be 1 to 64 letters",
    );
    refused(
        &fleetctl(
            &url,
            &[
                "user",
                "add",
                "m2",
                "--role",
                "manufacturer",
                "--clinic",
                "clinic-001",
            ],
        ),
        "--clinic is for clinic users",
    );
    let missing = fleetctl(&url, &["user", "add", "n2", "--role", "clinic"]);
    assert_eq!(missing.status.code(), Some(2), "a usage error");

    let rotated = token(&fleetctl(&url, &["user", "rotate", "nurse"]));
    assert_ne!(rotated, nurse);
    assert!(
        access::user_for_token(&pool, &nurse)
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(
        access::user_for_token(&pool, &rotated)
            .await
            .expect("lookup")
            .is_some()
    );
    refused(
        &fleetctl(&url, &["user", "rotate", "nobody"]),
        "no user 'nobody'",
    );
}
