//! API tokens: random bearer tokens shown once at creation; only their SHA-256 is stored.
//! Roles are ordered: operator < integrator < admin (each includes the one before).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Live alerts, cameras, crowd series.
    Operator,
    /// Also trajectories and search (audited).
    Integrator,
    /// Also the audit log and the watchlist.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Integrator => "integrator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "operator" => Ok(Role::Operator),
            "integrator" => Ok(Role::Integrator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?}: operator, integrator or admin")),
        }
    }
}

/// Prefix of every token, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "slt_";

/// A new random token (256 bits from the OS).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the OS random source");
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// What is stored for a token: its SHA-256 (hex). Tokens are long random strings, so a fast hash
/// is enough (no dictionary to attack), and it allows an indexed lookup per request.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Operator < Role::Integrator && Role::Integrator < Role::Admin);
        assert_eq!("integrator".parse::<Role>(), Ok(Role::Integrator));
        assert!("root".parse::<Role>().unwrap_err().contains("operator, integrator or admin"));
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert!(!token_hash(&a).contains(&a[TOKEN_PREFIX.len()..]));
    }
}
