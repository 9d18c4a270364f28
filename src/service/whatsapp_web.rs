//! WhatsApp Web accounts (issue 23): connect (pairing by QR code or pair code), the codes on
//! offer, logout, and the account's settings.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use wagate_events::account::AccountCommand;

use super::error::{Error, Result};
use crate::app::whatsapp_web::{LinkError, Offer, Pairing, WebSessions};
use crate::app::{App, Who};

/// How long `connect` waits for a code or a connection before it answers.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// A QR code to scan with the phone (WhatsApp > Linked devices > Link a device).
#[derive(Debug, Serialize, ToSchema)]
pub struct QrCodeView {
    /// The code's text (what the QR code encodes).
    pub code: String,
    /// The code drawn as a standalone SVG document.
    pub svg: String,
    /// When WhatsApp replaces it with a new one.
    pub expires_at: DateTime<Utc>,
}

/// An 8-character code to enter on the phone (Linked devices > Link with phone number).
#[derive(Debug, Serialize, ToSchema)]
pub struct PairCodeView {
    pub code: String,
    pub expires_at: DateTime<Utc>,
}

/// A `whatsapp_web` account's connection, with the codes on offer while it pairs.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhatsAppWebStatus {
    pub account_id: String,
    /// `stopped`, `pairing`, `connecting`, `connected`, `disconnected`, `logged_out`,
    /// `temporarily_banned`, `client_outdated` or `stream_replaced`.
    pub state: String,
    /// Why it is in this state, when known.
    pub reason: Option<String>,
    /// The gateway keeps the account connected (connect was asked, no logout since).
    pub wanted: bool,
    /// While pairing by QR code: the current code. Null otherwise.
    pub qr: Option<QrCodeView>,
    /// While pairing by phone number: the code to enter. Null otherwise.
    pub pair_code: Option<PairCodeView>,
    /// Why pairing ended or could not start, when it did.
    pub pair_error: Option<String>,
}

impl From<LinkError> for Error {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::App(e) => e.into(),
            LinkError::Actor(e) => e.into(),
            LinkError::NotFound(m) => Error::NotFound(m),
            LinkError::Conflict { code, message } => Error::Conflict { code, message },
            LinkError::Unavailable(m) => Error::Unavailable(m),
            LinkError::OtherNode(account) => other_node(account),
        }
    }
}

/// 409 `other_node`: another gateway runs `account`'s connection (forwarded there when it can
/// be, ADR 0029).
fn other_node(account: String) -> Error {
    Error::OtherNode {
        account,
        message: "another gateway runs this account's WhatsApp Web connection (GET /v1/nodes says which); send this request to it".into(),
    }
}

/// A message goes out through a WhatsApp Web account's connection, which only the gateway that
/// runs the account holds: elsewhere this is [`Error::OtherNode`], before anything is recorded.
pub fn require_connection_here(app: &App, account: &str) -> Result<()> {
    let web = app
        .model()
        .account(account)
        .is_some_and(|a| a.transport == wagate_events::account::Transport::WhatsappWeb);
    match app.cluster.get() {
        Some(cluster) if web && !cluster.runs(account) => Err(other_node(account.to_string())),
        _ => Ok(()),
    }
}

fn sessions(app: &App) -> Result<&std::sync::Arc<WebSessions>> {
    app.web
        .get()
        .ok_or_else(|| Error::Unavailable("WhatsApp Web is not running in this process".into()))
}

fn status_of(app: &App, account: &str, pairing: Pairing) -> Result<WhatsAppWebStatus> {
    let model = app.model();
    let web = model
        .account(account)
        .and_then(|a| a.whatsapp_web.clone())
        .ok_or_else(|| Error::not_found("account not found"))?;
    let qr = pairing.qr.and_then(
        |Offer {
             code,
             expires_at,
             svg,
         }| {
            svg.map(|svg| QrCodeView {
                code,
                svg: svg.to_string(),
                expires_at,
            })
        },
    );
    Ok(WhatsAppWebStatus {
        account_id: account.to_string(),
        state: web.state.as_str().into(),
        reason: web.reason,
        wanted: web.wanted,
        qr,
        pair_code: pairing.pair_code.map(|o| PairCodeView {
            code: o.code,
            expires_at: o.expires_at,
        }),
        pair_error: pairing.pair_error,
    })
}

/// The connection and the codes on offer (409 for an account on another transport).
pub async fn status(app: &App, account: &str) -> Result<WhatsAppWebStatus> {
    let pairing = sessions(app)?.pairing(account)?;
    app.catch_up_own().await?;
    status_of(app, account, pairing)
}

/// A phone number for pairing: its country code and number, 7..=15 digits, optionally after a
/// `+` (which is dropped).
pub fn check_phone(raw: &str) -> Result<String> {
    let digits = raw.strip_prefix('+').unwrap_or(raw);
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(
            "phone_number",
            "the phone's number with its country code, 7 to 15 digits (e.g. 5511999998888)",
        ));
    }
    Ok(digits.to_string())
}

/// Connects (pairing first when the account has no session). A connected account is left as
/// it is; the answer reports the state either way.
pub async fn connect(
    app: &App,
    who: &Who,
    account: &str,
    phone_number: Option<&str>,
) -> Result<WhatsAppWebStatus> {
    let phone = phone_number.map(check_phone).transpose()?;
    sessions(app)?
        .connect(who, account, phone, CONNECT_WAIT)
        .await?;
    status(app, account).await
}

/// Unlinks the device and erases the session.
pub async fn logout(app: &App, who: &Who, account: &str) -> Result<WhatsAppWebStatus> {
    sessions(app)?.logout(who, account).await?;
    status(app, account).await
}

/// Changes the account's WhatsApp Web settings (only those given).
pub async fn change(
    app: &App,
    who: &Who,
    account: &str,
    mark_read: Option<bool>,
) -> Result<WhatsAppWebStatus> {
    app.execute(
        &app.accounts,
        account,
        AccountCommand::ChangeWhatsAppWeb { mark_read },
        who,
    )
    .await?;
    status(app, account).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn phone_numbers_are_digits_with_a_country_code() {
        assert_eq!(
            super::check_phone("+5511999998888").unwrap(),
            "5511999998888"
        );
        assert!(super::check_phone("+55 11 99999-8888").is_err());
        assert!(super::check_phone("++5511999998888").is_err());
        assert!(super::check_phone("123").is_err());
        assert!(super::check_phone("55119999x8888").is_err());
        assert!(super::check_phone("1234567890123456").is_err());
    }
}
