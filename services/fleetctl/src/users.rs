//! `fleetctl user add|rotate`: the fleet API's users and their access tokens. A token
//! is printed once, when made; the database keeps only its SHA-256.

use anyhow::Context;
use fleet_store::access::{self, Role};

/// Why a user could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The request names something that is not there or is taken (exit 1).
    #[error("{0}")]
    Refused(String),
    /// The database could not be reached (exit 2).
    #[error(transparent)]
    CannotRun(#[from] anyhow::Error),
}

/// Makes a user; returns its token.
pub async fn add(database_url: &str, name: &str, role: &Role) -> Result<String, UserError> {
    check_name(name)?;
    let pool = fleet_store::connect(database_url)
        .await
        .context("connecting to the database")?;
    match access::add_user(&pool, name, role).await {
        Ok(token) => Ok(token),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            Err(UserError::Refused(format!(
                "user '{name}' exists; `fleetctl user rotate {name}` gives it a new token"
            )))
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23503") => {
            let clinic = match role {
                Role::Clinic(id) => id.as_str(),
                Role::Manufacturer => "",
            };
            Err(UserError::Refused(format!(
                "no clinic '{clinic}' in the registry (`fleetctl registry import FILE` first)"
            )))
        }
        Err(e) => Err(UserError::CannotRun(
            anyhow::Error::from(e).context("adding the user"),
        )),
    }
}

/// Gives a user a new token; the old one stops working at once.
pub async fn rotate(database_url: &str, name: &str) -> Result<String, UserError> {
    let pool = fleet_store::connect(database_url)
        .await
        .context("connecting to the database")?;
    access::rotate(&pool, name)
        .await
        .context("rotating the token")?
        .ok_or_else(|| UserError::Refused(format!("no user '{name}'")))
}

/// Names appear in the audit log and on the dashboard: printable, at most 64 chars.
fn check_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(UserError::Refused(format!(
            "user name '{name}' must be 1 to 64 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}
