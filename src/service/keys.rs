//! Key rotation (security checklist item 7): every secret sealed under an old master key is
//! sealed again under the current one, as events (`…Resealed`), so history replays still open
//! every key.

use wagate_events::account::AccountCommand;
use wagate_events::ai_global::{AiGlobalCommand, GLOBAL_ID};

use crate::app::{App, Who};
use crate::crypto::{api_key_ad, fallback_owner};
use crate::transport::cloud_api::{access_token_ad, app_secret_ad};

/// What [`rotate_keys`] did.
#[derive(Debug, Default)]
pub struct RotateReport {
    pub resealed: usize,
    pub failed: Vec<String>,
}

/// Re-encrypts every stored secret that is not under the current master key: the AI layers'
/// API keys (and fallback keys), then the Cloud API secrets (`wagate rotate-keys`).
pub async fn rotate_keys(app: &App, who: &Who) -> RotateReport {
    // (account or global, fallback key?, sealed)
    let mut todo: Vec<(Option<String>, bool, String)> = Vec::new();
    {
        let m = app.model();
        let mut layer = |account: Option<&str>, l: &wagate_events::settings::LayerState| {
            if let Some(k) = &l.api_key {
                todo.push((account.map(str::to_string), false, k.sealed.clone()));
            }
            if let Some(k) = &l.fallback_api_key {
                todo.push((account.map(str::to_string), true, k.sealed.clone()));
            }
        };
        layer(None, &m.global);
        for a in m.accounts.values().filter(|a| !a.deleted) {
            layer(Some(&a.id), &a.ai);
        }
    }
    let keyring = &app.config.keyring;
    let mut report = RotateReport::default();
    for (account, fallback, sealed) in todo {
        if !keyring.needs_rotation(&sealed) {
            continue;
        }
        let mut owner = account
            .as_ref()
            .map_or_else(|| "global".to_string(), |a| format!("account:{a}"));
        if fallback {
            owner = fallback_owner(&owner);
        }
        let result = match keyring.reseal(&sealed, &api_key_ad(&owner)) {
            Err(e) => Err(e.to_string()),
            Ok(resealed) => match (&account, fallback) {
                (None, false) => app
                    .execute(
                        &app.global,
                        GLOBAL_ID,
                        AiGlobalCommand::ResealApiKey { sealed: resealed },
                        who,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                (None, true) => app
                    .execute(
                        &app.global,
                        GLOBAL_ID,
                        AiGlobalCommand::ResealFallbackApiKey { sealed: resealed },
                        who,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                (Some(id), false) => app
                    .execute(
                        &app.accounts,
                        id,
                        AccountCommand::ResealApiKey { sealed: resealed },
                        who,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                (Some(id), true) => app
                    .execute(
                        &app.accounts,
                        id,
                        AccountCommand::ResealFallbackApiKey { sealed: resealed },
                        who,
                    )
                    .await
                    .map_err(|e| e.to_string()),
            },
        };
        match result {
            Ok(()) => report.resealed += 1,
            Err(e) => report
                .failed
                .push(format!("cannot re-encrypt the {owner} key: {e}")),
        }
    }
    rotate_cloud_secrets(app, who, &mut report).await;
    report
}

/// Re-encrypts the Cloud API secrets (access token, app secret) that are not under the current
/// master key. Counts each re-sealed secret in `report`.
async fn rotate_cloud_secrets(app: &App, who: &Who, report: &mut RotateReport) {
    let todo: Vec<(String, String, String)> = app
        .model()
        .accounts
        .values()
        .filter(|a| !a.deleted)
        .filter_map(|a| {
            let c = a.cloud_api.as_ref()?;
            Some((
                a.id.clone(),
                c.settings.access_token_sealed.clone(),
                c.settings.app_secret_sealed.clone(),
            ))
        })
        .collect();
    let keyring = &app.config.keyring;
    for (account, token, secret) in todo {
        let stale = usize::from(keyring.needs_rotation(&token))
            + usize::from(keyring.needs_rotation(&secret));
        if stale == 0 {
            continue;
        }
        let resealed = keyring
            .reseal(&token, &access_token_ad(&account))
            .and_then(|t| Ok((t, keyring.reseal(&secret, &app_secret_ad(&account))?)));
        let result = match resealed {
            Err(e) => Err(e.to_string()),
            Ok((access_token_sealed, app_secret_sealed)) => {
                let cmd = AccountCommand::ResealCloudApiSecrets {
                    access_token_sealed,
                    app_secret_sealed,
                };
                app.execute(&app.accounts, &account, cmd, who)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        match result {
            Ok(()) => report.resealed += stale,
            Err(e) => report.failed.push(format!(
                "cannot re-encrypt the cloud_api secrets of account:{account}: {e}"
            )),
        }
    }
}
