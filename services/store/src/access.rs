//! API users and their access tokens (migration 0007), and the audit log (0005; the
//! caller's address since 0008).
//! Tokens are random, shown once when made, and stored only as their SHA-256.

use std::net::IpAddr;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// What a user may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A clinic's staff: its own pumps' alarms, to see and acknowledge.
    Clinic(String),
    /// The manufacturer: read-only, every pump, device data only.
    Manufacturer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
}

/// Tokens start with this, so a leaked one is recognisable (secret scanners) and a
/// pasted one can be told from a password.
const TOKEN_PREFIX: &str = "fleet_";

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.trim().as_bytes()).to_vec()
}

/// Makes a user and returns its token (256 random bits). A name already taken is an
/// error (unique violation): tokens are replaced with [`rotate`], not by re-adding.
pub async fn add_user(pool: &PgPool, name: &str, role: &Role) -> Result<String, sqlx::Error> {
    let token = new_token();
    let clinic = match role {
        Role::Clinic(id) => Some(id.as_str()),
        Role::Manufacturer => None,
    };
    sqlx::query(
        "INSERT INTO api_user (name, role, clinic_id, token_sha256) VALUES ($1, $2, $3, $4)",
    )
    .bind(name)
    .bind(role_name(role))
    .bind(clinic)
    .bind(digest(&token))
    .execute(pool)
    .await?;
    Ok(token)
}

/// Gives a user a new token; the old one stops working at once. None if no such user.
pub async fn rotate(pool: &PgPool, name: &str) -> Result<Option<String>, sqlx::Error> {
    let token = new_token();
    let updated = sqlx::query("UPDATE api_user SET token_sha256 = $2 WHERE name = $1")
        .bind(name)
        .bind(digest(&token))
        .execute(pool)
        .await?
        .rows_affected();
    Ok((updated > 0).then_some(token))
}

/// The user a token belongs to, if any.
pub async fn user_for_token(pool: &PgPool, token: &str) -> Result<Option<User>, sqlx::Error> {
    let row: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT name, role, clinic_id FROM api_user WHERE token_sha256 = $1")
            .bind(digest(token))
            .fetch_optional(pool)
            .await?;
    // A row that is neither a clinic's user with its clinic nor the manufacturer's
    // (impossible under the table's CHECK) is no user at all: never a wider role.
    Ok(row.and_then(|(name, role, clinic)| {
        let role = match (role.as_str(), clinic) {
            ("clinic", Some(id)) => Role::Clinic(id),
            ("manufacturer", None) => Role::Manufacturer,
            _ => return None,
        };
        Some(User { name, role })
    }))
}

pub fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Clinic(_) => "clinic",
        Role::Manufacturer => "manufacturer",
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Appends to the audit log: who (`actor`), what (`action`), on what (`subject`), the
/// details as JSON text, and from which network address (`caller_addr`; None where
/// there is no network caller, e.g. a local tool).
pub async fn audit<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
    caller_addr: Option<IpAddr>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (actor, action, subject, detail, caller_addr)
         VALUES ($1, $2, $3, $4::jsonb, $5::inet)",
    )
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(detail.to_string())
    .bind(caller_addr.map(|a| a.to_string()))
    .execute(executor)
    .await?;
    Ok(())
}
