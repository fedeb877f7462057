//! Partner Center's token sources: app-only (client credentials) and app+user (a
//! refresh token, for the calls Microsoft allows only with a user behind them, such
//! as the relationship list). Both are `oauth::TokenSource`s; this only reads the
//! `[backend]` settings into them.

use crate::config::PartnerCenterConfig;
use crate::oauth::{RefreshTokenStore, TokenSource};

const DEFAULT_SCOPE: &str = "https://api.partnercenter.microsoft.com/.default";

fn build(cfg: &PartnerCenterConfig) -> TokenSource {
    let source = TokenSource::new(
        cfg.token_url.clone(),
        cfg.client_id.clone(),
        cfg.client_secret.expose().to_string(),
        cfg.scope.clone().unwrap_or_else(|| DEFAULT_SCOPE.into()),
    );
    match (&cfg.scope, &cfg.resource) {
        (None, Some(resource)) => source.with_resource(resource.clone()),
        _ => source,
    }
}

/// The app-only source.
pub fn app(cfg: &PartnerCenterConfig) -> TokenSource {
    build(cfg)
}

/// The app+user source, when a refresh token is configured; the tokens Microsoft
/// rotates to are kept in the state dir for the next start.
pub fn user(cfg: &PartnerCenterConfig) -> Option<TokenSource> {
    cfg.user_refresh_token.as_ref().map(|t| {
        build(cfg)
            .with_refresh_token(t.expose().to_string())
            .with_refresh_token_store(RefreshTokenStore::new(
                cfg.refresh_token_store.clone(),
                t.expose(),
            ))
    })
}
