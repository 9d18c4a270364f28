//! AI settings, for the API and the dashboard: a layer's settings (global, an account's), a
//! chat's, and a chat's human-takeover pause (the caller has checked the account and the JID).
//! A layer's change comes in as [`SettingsInput`], the settings patch of the one settings table
//! (`wagate_events::settings::FIELDS`) with the keys in plain text; keys are sealed here.

use wagate_events::account::AccountCommand;
use wagate_events::ai_global::{AiGlobalCommand, GLOBAL_ID};
use wagate_events::chat_settings::{self, ChatSettingsCommand};
use wagate_events::settings::{self, origin_of, AiSettingsPatch, Patch, SealedKey};
use wagate_projections::effective::builtin;

use crate::app::{App, Who};
use crate::service::Error;

/// A change to one layer's AI settings as a front end submits it: the keys in plain text.
pub type SettingsInput = AiSettingsPatch<String>;

/// Longest API key accepted.
pub const MAX_API_KEY: usize = 4096;

/// Executes a command on a chat's settings stream.
pub async fn change_chat(
    app: &App,
    who: &Who,
    acc: &str,
    jid: &str,
    cmd: ChatSettingsCommand,
) -> Result<(), Error> {
    app.execute(&app.chats, &chat_settings::stream_id(acc, jid), cmd, who)
        .await?;
    Ok(())
}

/// Ends a chat's human-takeover pause now. Returns whether the chat was paused; the read models
/// have caught up when it returns.
pub async fn resume_chat(app: &App, who: &Who, acc: &str, jid: &str) -> Result<bool, Error> {
    let resumed = app.gateway()?.resume(acc, jid, who.metadata()).await?;
    if resumed {
        tracing::info!(account = %acc, "AI resumed in a chat by request");
    }
    app.catch_up().await?;
    Ok(resumed)
}

/// Checks a write-only key from a request (`field` names it in the 400).
fn checked_key<'a>(field: &'static str, key: &'a str) -> Result<&'a str, Error> {
    let key = key.trim();
    if key.is_empty() {
        return Err(Error::invalid(
            field,
            "must not be empty; send null to clear the key",
        ));
    }
    if key.len() > MAX_API_KEY || key.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_API_KEY} printable characters"),
        ));
    }
    Ok(key)
}

/// What this layer stores today, for sealing keys with the origin they will be used with.
struct LayerUrls<'a> {
    base_url: Option<&'a str>,
    fallback_base_url: Option<&'a str>,
}

/// Turns the request into a domain patch, sealing a new key for `owner` and the origin of the
/// base URL it will be used with at this layer (`fallback_base` when this layer sets none). The
/// fallback key is sealed for the origin of this layer's `fallback_base_url`, or of the base URL
/// the main key would use when the layer sets none.
fn to_patch(
    app: &App,
    req: SettingsInput,
    owner: &str,
    current: LayerUrls<'_>,
    fallback_base: &str,
) -> Result<AiSettingsPatch, Error> {
    // Validated first: the URLs below are normalized, and a bad one is refused naming its field.
    let mut req = settings::validate(req)?;
    let base = match &req.base_url {
        Patch::Set(url) => url.clone(),
        Patch::Clear => fallback_base.to_string(),
        Patch::Keep => current.base_url.unwrap_or(fallback_base).to_string(),
    };
    let api_key = match std::mem::take(&mut req.api_key) {
        Patch::Keep => Patch::Keep,
        Patch::Clear => Patch::Clear,
        Patch::Set(key) => {
            let key = checked_key("api_key", &key)?;
            let origin = origin_of(&base)
                .ok_or_else(|| Error::invalid("base_url", "not an absolute http(s) URL"))?;
            Patch::Set(SealedKey {
                sealed: app.seal_api_key(owner, key),
                origin,
            })
        }
    };
    let fallback_api_key = match std::mem::take(&mut req.fallback_api_key) {
        Patch::Keep => Patch::Keep,
        Patch::Clear => Patch::Clear,
        Patch::Set(key) => {
            let key = checked_key("fallback_api_key", &key)?;
            let fallback_url = match &req.fallback_base_url {
                Patch::Set(url) => url.clone(),
                Patch::Clear => base.clone(),
                Patch::Keep => current
                    .fallback_base_url
                    .map_or_else(|| base.clone(), str::to_string),
            };
            let origin = origin_of(&fallback_url).ok_or_else(|| {
                Error::invalid("fallback_base_url", "not an absolute http(s) URL")
            })?;
            Patch::Set(SealedKey {
                sealed: app.seal_api_key(&crate::crypto::fallback_owner(owner), key),
                origin,
            })
        }
    };
    Ok(req.with_keys(api_key, fallback_api_key))
}

fn env_or_default_base(app: &App) -> String {
    app.env_layer
        .settings
        .base_url
        .clone()
        .unwrap_or_else(|| builtin::<String>("base_url"))
}

/// Model URLs are checked when saved, not only when called (issue 21, finding 3): one that can
/// never be reached — a metadata, link-local or other never-allowed address, loopback or a
/// private network outside `WAGATE_ALLOW_PRIVATE_NETWORKS`, plain http outside it — is refused for
/// everyone, naming the setting that would allow it. A private target inside the list is the
/// admin's: an account token gets one message for every non-public target (it learns nothing
/// about which networks exist or are allowed) unless `WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS`.
/// A name that does not resolve now is accepted; every call checks the addresses again.
async fn check_model_urls(app: &App, who: &Who, req: &SettingsInput) -> Result<(), Error> {
    let tenant = who.actor.starts_with("token:");
    let allowed = if tenant && !app.config.allow_private_networks_for_accounts {
        Vec::new()
    } else {
        app.config.allow_private_networks.clone()
    };
    let guard = crate::model::guard::OutboundGuard::new(allowed);
    for (field, patch) in [
        ("base_url", &req.base_url),
        ("fallback_base_url", &req.fallback_base_url),
    ] {
        let Patch::Set(raw) = patch else { continue };
        // A malformed URL is refused by the settings' own validation, with its message.
        let Ok(url) = url::Url::parse(raw.trim()) else {
            continue;
        };
        match guard.check_url(&url).await {
            Ok(()) => {}
            Err(e) if !e.is_policy() => {}
            Err(_) if tenant => {
                return Err(Error::invalid(
                    field,
                    "must be a public https URL (private model servers are set by an admin)",
                ))
            }
            Err(e) => return Err(Error::invalid(field, e.to_string())),
        }
    }
    Ok(())
}

/// Applies a change to the global layer .
pub async fn change_global(app: &App, who: &Who, req: SettingsInput) -> Result<(), Error> {
    check_model_urls(app, who, &req).await?;
    let current = app.model().global.settings.clone();
    let patch = to_patch(
        app,
        req,
        "global",
        LayerUrls {
            base_url: current.base_url.as_deref(),
            fallback_base_url: current.fallback_base_url.as_deref(),
        },
        &env_or_default_base(app),
    )?;
    app.execute(&app.global, GLOBAL_ID, AiGlobalCommand::Change(patch), who)
        .await?;
    Ok(())
}

/// Applies a change to an account's layer .
pub async fn change_account_ai(
    app: &App,
    who: &Who,
    acc: &str,
    req: SettingsInput,
) -> Result<(), Error> {
    check_model_urls(app, who, &req).await?;
    let (current, fallback) = {
        let m = app.model();
        let a = m
            .account(acc)
            .ok_or_else(|| Error::not_found("account not found"))?;
        let fallback = m
            .global
            .settings
            .base_url
            .clone()
            .unwrap_or_else(|| env_or_default_base(app));
        (a.ai.settings.clone(), fallback)
    };
    let owner = format!("account:{acc}");
    let urls = LayerUrls {
        base_url: current.base_url.as_deref(),
        fallback_base_url: current.fallback_base_url.as_deref(),
    };
    let patch = to_patch(app, req, &owner, urls, &fallback)?;
    app.execute(&app.accounts, acc, AccountCommand::ChangeAi(patch), who)
        .await?;
    Ok(())
}
