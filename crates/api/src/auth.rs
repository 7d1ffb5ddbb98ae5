//! Who may do what. Every call carries `authorization: Bearer <token>`;
//! the tokens file maps the SHA-256 of each token to an operator id and a
//! role, so the file never holds a usable token. [`Action::roles`] is the
//! whole permission table.
//!
//! The tokens file (TOML, `<data-dir>/tokens.toml` by default):
//!
//! ```toml
//! [[tokens]]
//! operator_id = "op-zhang"
//! role = "operator"          # operator | dispatcher | admin | viewer | provider
//! sha256 = "9f86d0..."       # of the token; `eldercare token add` writes it
//! ```
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tonic::{Request, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Hotline operator: subscribes, reads, acts on alerts.
    Operator,
    /// Dispatcher: subscribes, reads, dispatches and resolves.
    Dispatcher,
    /// Registry administrator.
    Admin,
    /// Read only.
    Viewer,
    /// A care provider's system: records its own carers' check-ins and
    /// reads its own month's report, nothing else. The token's operator
    /// id is the provider's id in the registry (its scope).
    Provider,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Operator,
        Role::Dispatcher,
        Role::Admin,
        Role::Viewer,
        Role::Provider,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Dispatcher => "dispatcher",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Everything a call can do, for the permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Subscribe, ListAlerts, GetAlert, Stats, ListSilences.
    ReadAlerts,
    Acknowledge,
    Dispatch,
    Escalate,
    Resolve,
    AddNote,
    /// Create and end silences.
    Silence,
    /// Get and list elders and devices.
    ReadRegistry,
    /// Create, update, delete, import, rotate secrets.
    WriteRegistry,
    /// Readings and latest values.
    ReadTelemetry,
    /// Operate the server (reload rules).
    Administer,
    /// Record a carer's check-in or check-out (VisitService.CheckIn); a
    /// provider only its own carers', at elders it has a plan for.
    CheckIn,
    /// A provider's month (VisitService.ProviderReport); a provider only
    /// its own.
    ReadVisitReport,
}

impl Action {
    /// The roles allowed to do this: the permission table.
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Action::ReadAlerts => &[Operator, Dispatcher, Viewer],
            Action::Acknowledge | Action::Escalate | Action::Silence => &[Operator],
            Action::Dispatch | Action::Resolve | Action::AddNote => &[Operator, Dispatcher],
            Action::ReadRegistry => &[Operator, Dispatcher, Admin, Viewer],
            Action::WriteRegistry => &[Admin],
            Action::ReadTelemetry => &[Operator, Dispatcher, Viewer],
            Action::Administer => &[Admin],
            Action::CheckIn => &[Provider, Operator],
            Action::ReadVisitReport => &[Operator, Dispatcher, Viewer, Provider],
        }
    }
}

/// The caller, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub operator_id: String,
    pub role: Role,
}

impl Principal {
    /// The provider whose data alone this caller may touch: its own id
    /// for a `provider` token, `None` (no such limit) for the hotline's
    /// roles.
    pub fn provider_scope(&self) -> Option<&str> {
        (self.role == Role::Provider).then_some(self.operator_id.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write tokens file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("tokens file {path} is invalid: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    operator_id: String,
    role: Role,
    sha256: String,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn read_file(path: &Path) -> Result<TokensFile, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokensFile::default()),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let file: TokensFile = toml::from_str(&text).map_err(|e| AuthError::Invalid {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    for t in &file.tokens {
        if t.operator_id.is_empty() || t.sha256.len() != 64 || hex::decode(&t.sha256).is_err() {
            return Err(AuthError::Invalid {
                path: path.display().to_string(),
                reason: format!(
                    "entry of `{}` needs an operator_id and a 64-hex-digit sha256",
                    t.operator_id
                ),
            });
        }
    }
    Ok(file)
}

/// The token check, shared by every service; reloadable.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    path: Option<PathBuf>,
    tokens: Arc<RwLock<HashMap<String, Principal>>>,
}

impl Auth {
    /// Loads the tokens file; a missing file means no tokens yet (every
    /// call is refused until one is added).
    pub fn load(path: &Path) -> Result<Auth, AuthError> {
        let auth = Auth {
            path: Some(path.to_path_buf()),
            tokens: Arc::default(),
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Re-reads the tokens file; on error the old tokens stay.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let file = read_file(path)?;
        let map: HashMap<String, Principal> = file
            .tokens
            .into_iter()
            .map(|t| {
                (
                    t.sha256.to_ascii_lowercase(),
                    Principal {
                        operator_id: t.operator_id,
                        role: t.role,
                    },
                )
            })
            .collect();
        let n = map.len();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(n)
    }

    pub fn len(&self) -> usize {
        self.tokens.read().map(|t| t.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Who `token` belongs to, whatever they may do (a console's sign-in).
    pub fn principal(&self, token: &str) -> Result<Principal, Status> {
        self.tokens
            .read()
            .map_err(|_| Status::internal("token table unavailable"))?
            .get(&digest(token))
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// The caller of `req`, if their token allows `action`.
    pub fn check<T>(&self, req: &Request<T>, action: Action) -> Result<Principal, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
            })?;
        let who = self.principal(token)?;
        if !action.roles().contains(&who.role) {
            return Err(Status::permission_denied(format!(
                "role `{}` may not do this ({action:?} needs one of: {})",
                who.role.as_str(),
                action
                    .roles()
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(who)
    }
}

/// Issues a new token for `operator_id` with `role`: stores its hash in
/// the tokens file (created if missing) and returns the token, which is
/// shown only this once.
pub fn add_token(path: &Path, operator_id: &str, role: Role) -> Result<String, AuthError> {
    let mut file = read_file(path)?;
    let token = format!("ect_{}", eldercare_store::generate_secret());
    file.tokens.push(TokenEntry {
        operator_id: operator_id.to_string(),
        role,
        sha256: digest(&token),
    });
    write_file(path, &file)?;
    Ok(token)
}

/// The operators and roles in the tokens file (never the hashes).
pub fn list_tokens(path: &Path) -> Result<Vec<Principal>, AuthError> {
    Ok(read_file(path)?
        .tokens
        .into_iter()
        .map(|t| Principal {
            operator_id: t.operator_id,
            role: t.role,
        })
        .collect())
}

/// Removes every token of `operator_id`; returns how many there were.
/// A running server stops accepting them on SIGHUP.
pub fn revoke_tokens(path: &Path, operator_id: &str) -> Result<usize, AuthError> {
    let mut file = read_file(path)?;
    let before = file.tokens.len();
    file.tokens.retain(|t| t.operator_id != operator_id);
    let removed = before - file.tokens.len();
    if removed > 0 {
        write_file(path, &file)?;
    }
    Ok(removed)
}

fn write_file(path: &Path, file: &TokensFile) -> Result<(), AuthError> {
    let text = format!(
        "# eldercare API tokens: SHA-256 of each bearer token, never the token.\n# Add with `eldercare token add`; the server re-reads this file on SIGHUP.\n{}",
        toml::to_string(file).map_err(|e| AuthError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?
    );
    let write_err = |source| AuthError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    // Write then rename, so a reader never sees half a file.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }

    #[test]
    fn tokens_map_to_operators_and_roles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let op = add_token(&path, "op-1", Role::Operator).unwrap();
        let viewer = add_token(&path, "v-1", Role::Viewer).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&op), "the file holds hashes only");
        let auth = Auth::load(&path).unwrap();
        assert_eq!(auth.len(), 2);
        let who = auth.check(&req(Some(&op)), Action::Acknowledge).unwrap();
        assert_eq!(
            (who.operator_id.as_str(), who.role),
            ("op-1", Role::Operator)
        );
        let e = auth
            .check(&req(Some(&viewer)), Action::Acknowledge)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(auth.check(&req(Some(&viewer)), Action::ReadAlerts).is_ok());
        let e = auth.check(&req(None), Action::ReadAlerts).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = auth
            .check(&req(Some("ect_nope")), Action::ReadAlerts)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_missing_file_is_no_tokens_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::load(&dir.path().join("none.toml")).unwrap();
        assert!(auth.is_empty());
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[[tokens]]\noperator_id = \"x\"\nrole = \"boss\"\nsha256 = \"00\"\n",
        )
        .unwrap();
        assert!(matches!(Auth::load(&bad), Err(AuthError::Invalid { .. })));
    }
}
