//! `eldercare.v1.AdminService`: operations on the running server.
use crate::auth::{Action, Auth};
use eldercare_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Why rules could not be reloaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no rule file is configured (start the server with --rules)")]
    NoFile,
    #[error("{0}")]
    Refused(String),
}

/// Reloads the rule file; the server binary implements it, as it owns
/// the file's path and the channel to the rule engine.
pub trait RulesReload: Send + Sync + 'static {
    /// The file read and the number of elders with overrides.
    fn reload(&self) -> Result<(String, usize), ReloadError>;
}

pub struct Admin {
    auth: Auth,
    rules: Arc<dyn RulesReload>,
}

impl Admin {
    pub fn new(auth: Auth, rules: Arc<dyn RulesReload>) -> Admin {
        Admin { auth, rules }
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for Admin {
    async fn reload_rules(
        &self,
        req: Request<pb::ReloadRulesRequest>,
    ) -> Result<Response<pb::ReloadRulesResponse>, Status> {
        let who = self.auth.check(&req, Action::Administer)?;
        match self.rules.reload() {
            Ok((file, overrides)) => {
                tracing::info!(by = %who.operator_id, %file, "Rules reloaded over the API.");
                Ok(Response::new(pb::ReloadRulesResponse {
                    file,
                    elder_overrides: u32::try_from(overrides).unwrap_or(u32::MAX),
                }))
            }
            Err(e @ ReloadError::NoFile) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ ReloadError::Refused(_)) => Err(Status::invalid_argument(e.to_string())),
        }
    }
}
