//! A chat's AI settings and its human-takeover pause, for the API and the dashboard (the caller
//! has checked the account and the JID). The layers' settings (`PUT /v1/ai/global`,
//! `PUT /v1/accounts/{acc}/ai`) are still applied in `http::ai`.

use wagate_events::chat_settings::{self, ChatSettingsCommand};

use crate::app::{App, Who};
use crate::service::Error;

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
