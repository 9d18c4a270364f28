//! AI configuration routes: the global layer, an account's layer, a chat's layer (mode, custom
//! prompt, blocked), and the effective config with the source of each value.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_events::chat_settings::{ChatControlsPatch, ChatMode, ChatSettingsCommand};
use wagate_events::ids::{chat_kind, ChatKind};
use wagate_events::settings::{
    AiSettings, BusinessHours, FieldSpec, Kind, LayerState, Patch, SettingValue, Value, FIELDS,
};
use wagate_projections::effective::{self, Effective};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use super::openapi::{setting_schema, AccountId, AiMode, Jid, KEY_PATTERN};
use crate::app::SharedApp;
use crate::service::ai::{
    change_account_ai, change_chat, change_global, resume_chat, SettingsInput, MAX_API_KEY,
};

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(get_global, put_global))
        .routes(routes!(get_account_ai, put_account_ai))
        .routes(routes!(get_chat_ai, put_chat_ai))
        .routes(routes!(get_chat_blocked, put_chat_blocked))
        .routes(routes!(get_effective))
        .routes(routes!(resume_chat_ai))
        .routes(routes!(get_account_usage))
}

/// A change to one layer's AI settings: the settings patch of the one settings table
/// (`wagate_events::settings::FIELDS`), whose OpenAPI schema is built from that table too.
/// Omitted fields keep their value; `null` clears the field at this layer (global: falls back to
/// env / default; account: inherits from global).
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct AiSettingsRequest(pub SettingsInput);

/// One stored layer of AI settings: `null` where this layer does not set a value.
#[derive(Debug)]
pub struct AiSettingsView {
    pub settings: AiSettings,
    /// Whether this layer stores an API key (the key itself is never returned).
    pub has_api_key: bool,
    /// Whether this layer stores a fallback API key.
    pub has_fallback_api_key: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

impl AiSettingsView {
    fn of(layer: &LayerState, updated_at: Option<DateTime<Utc>>) -> Self {
        Self {
            settings: layer.settings.clone(),
            has_api_key: layer.api_key.is_some(),
            has_fallback_api_key: layer.fallback_api_key.is_some(),
            updated_at,
        }
    }
}

impl Serialize for AiSettingsView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(FIELDS.len() + 3))?;
        for spec in FIELDS {
            map.serialize_entry(spec.name, &self.settings.get(spec.field))?;
        }
        map.serialize_entry("has_api_key", &self.has_api_key)?;
        map.serialize_entry("has_fallback_api_key", &self.has_fallback_api_key)?;
        map.serialize_entry("updated_at", &self.updated_at)?;
        map.end()
    }
}

impl utoipa::PartialSchema for AiSettingsRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
        let key = |help: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .max_length(Some(MAX_API_KEY))
                .pattern(Some(KEY_PATTERN))
                .description(Some(help))
        };
        let mut object = ObjectBuilder::new()
            .description(Some(
                "A change to one layer's AI settings. Omitted fields keep their value; `null` \
                 clears the field at this layer (global: falls back to env / default; account: \
                 inherits from global).",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for spec in FIELDS {
            object = object.property(spec.name, setting_schema(spec, true));
        }
        object
            .property(
                "api_key",
                key("Write-only: stored encrypted, never returned. `null` clears it."),
            )
            .property(
                "fallback_api_key",
                key("Write-only key of the fallback model, for the origin of \
                     `fallback_base_url`; never returned. Without one, the fallback gets the \
                     main key only when it has the main key's origin. `null` clears it."),
            )
            .into()
    }
}

impl utoipa::ToSchema for AiSettingsRequest {}

impl utoipa::PartialSchema for AiSettingsView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
        let mut object = ObjectBuilder::new().description(Some(
            "One stored layer of AI settings: `null` where this layer does not set a value.",
        ));
        for spec in FIELDS {
            object = object.property(spec.name, setting_schema(spec, false));
        }
        object
            .property(
                "has_api_key",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some(
                        "Whether this layer stores an API key (the key itself is never returned).",
                    )),
            )
            .required("has_api_key")
            .property(
                "has_fallback_api_key",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some("Whether this layer stores a fallback API key.")),
            )
            .required("has_fallback_api_key")
            .property(
                "updated_at",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .into()
    }
}

impl utoipa::ToSchema for AiSettingsView {}

/// The global AI settings.
#[utoipa::path(get, path = "/v1/ai/global", tag = "ai",
    responses((status = 200, body = AiSettingsView)),
    security(("admin_jwt" = [])))]
async fn get_global(
    State(app): State<SharedApp>,
    caller: Caller,
) -> Result<Json<AiSettingsView>, ApiError> {
    caller.require_admin()?;
    let m = app.model();
    Ok(Json(AiSettingsView::of(&m.global, m.global_updated_at)))
}

/// Changes the global AI settings (the seed's `PUT /v1/ai/global`).
#[utoipa::path(put, path = "/v1/ai/global", tag = "ai", request_body = AiSettingsRequest,
    responses((status = 200, body = AiSettingsView)),
    security(("admin_jwt" = [])))]
async fn put_global(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiJson(req): ApiJson<AiSettingsRequest>,
) -> Result<Json<AiSettingsView>, ApiError> {
    caller.require_admin()?;
    change_global(&app, &caller.who(), req.0).await?;
    let m = app.model();
    Ok(Json(AiSettingsView::of(&m.global, m.global_updated_at)))
}

fn account_ai_view(app: &SharedApp, acc: &str) -> Result<AiSettingsView, ApiError> {
    let m = app.model();
    let a = m
        .account(acc)
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    Ok(AiSettingsView::of(&a.ai, a.ai_updated_at))
}

/// An account's AI overrides (`null` = inherit from global).
#[utoipa::path(get, path = "/v1/accounts/{acc}/ai", tag = "ai", params(("acc" = AccountId, Path)),
    responses((status = 200, body = AiSettingsView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_account_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
) -> Result<Json<AiSettingsView>, ApiError> {
    caller.require_account(&acc)?;
    account_ai_view(&app, &acc).map(Json)
}

/// Changes an account's AI overrides.
#[utoipa::path(put, path = "/v1/accounts/{acc}/ai", tag = "ai", params(("acc" = AccountId, Path)),
    request_body = AiSettingsRequest,
    responses((status = 200, body = AiSettingsView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn put_account_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
    ApiJson(req): ApiJson<AiSettingsRequest>,
) -> Result<Json<AiSettingsView>, ApiError> {
    caller.require_account(&acc)?;
    change_account_ai(&app, &caller.who(), &acc, req.0).await?;
    account_ai_view(&app, &acc).map(Json)
}

/// A chat's own AI layer and blocked flag: the mode, the custom prompt, and the settings the
/// settings table marks `chat` (`null`: inherited).
#[derive(Debug)]
pub struct ChatAiView {
    pub account_id: String,
    pub chat_id: String,
    pub mode: ChatMode,
    pub custom_system_prompt: Option<String>,
    pub blocked: bool,
    pub settings: AiSettings,
}

impl Serialize for ChatAiView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("account_id", &self.account_id)?;
        map.serialize_entry("chat_id", &self.chat_id)?;
        map.serialize_entry("mode", &self.mode)?;
        map.serialize_entry("custom_system_prompt", &self.custom_system_prompt)?;
        map.serialize_entry("blocked", &self.blocked)?;
        for spec in FIELDS.iter().filter(|f| f.chat) {
            map.serialize_entry(spec.name, &self.settings.get(spec.field))?;
        }
        map.end()
    }
}

impl utoipa::PartialSchema for ChatAiView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let mut object = ObjectBuilder::new()
            .description(Some(
                "A chat's own AI layer: its mode, custom prompt, blocked flag and the settings \
                 it sets for itself (`null`: inherited).",
            ))
            .property("account_id", text())
            .required("account_id")
            .property("chat_id", text())
            .required("chat_id")
            .property("mode", utoipa::openapi::Ref::from_schema_name("AiMode"))
            .required("mode")
            .property(
                "custom_system_prompt",
                ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null])),
            )
            .property("blocked", ObjectBuilder::new().schema_type(Type::Boolean))
            .required("blocked");
        for spec in FIELDS.iter().filter(|f| f.chat) {
            object = object.property(spec.name, setting_schema(spec, false));
        }
        object.into()
    }
}

impl utoipa::ToSchema for ChatAiView {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) {
        schemas.push((
            AiMode::name().into_owned(),
            <AiMode as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// A change to a chat's own layer. Omitted fields keep their value; `null` inherits.
#[derive(Debug)]
pub struct ChatAiRequest {
    pub mode: Option<ChatMode>,
    /// `null` (or an empty string) removes the custom prompt.
    pub custom_system_prompt: Patch<String>,
    /// The chat settings changed (the others are refused).
    pub settings: SettingsInput,
}

impl<'de> Deserialize<'de> for ChatAiRequest {
    /// Reads the object field by field (so an error names its field): `mode`,
    /// `custom_system_prompt`, and the chat settings of the table, each by its kind; a setting a
    /// chat may not set, or an unknown field, is refused.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ChatAiRequest;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a chat's AI settings")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ChatAiRequest, A::Error> {
                let mut req = ChatAiRequest {
                    mode: None,
                    custom_system_prompt: Patch::Keep,
                    settings: SettingsInput::default(),
                };
                while let Some(key) = map.next_key::<ChatKey>()? {
                    match key {
                        ChatKey::Mode => req.mode = map.next_value()?,
                        ChatKey::Prompt => req.custom_system_prompt = map.next_value()?,
                        ChatKey::Setting(spec) => {
                            let patch = next_setting(&mut map, spec.kind)?;
                            req.settings.set(spec.field, patch);
                        }
                    }
                }
                Ok(req)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A field of [`ChatAiRequest`]; an unknown one, or a setting a chat may not set, is refused
/// as its key is read (so the error names it).
enum ChatKey {
    Mode,
    Prompt,
    Setting(&'static FieldSpec),
}

impl<'de> Deserialize<'de> for ChatKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        match name.as_ref() {
            "mode" => Ok(Self::Mode),
            "custom_system_prompt" => Ok(Self::Prompt),
            other => match FieldSpec::named(other) {
                Some(spec) if spec.chat => Ok(Self::Setting(spec)),
                Some(_) => Err(D::Error::custom(format!(
                    "unknown field `{other}`: it is set per account or globally, not per chat"
                ))),
                None => Err(D::Error::unknown_field(
                    other,
                    &["mode", "custom_system_prompt", "<a chat setting>"],
                )),
            },
        }
    }
}

/// The next value of a map as a setting of `kind` (`null`: clear).
fn next_setting<'de, A: serde::de::MapAccess<'de>>(
    map: &mut A,
    kind: Kind,
) -> Result<Patch<Value>, A::Error> {
    fn patch<T: SettingValue>(v: Option<T>) -> Patch<Value> {
        v.map_or(Patch::Clear, |v| Patch::Set(v.into_value()))
    }
    Ok(match kind {
        Kind::Bool => patch(map.next_value::<Option<bool>>()?),
        Kind::U32 { .. } => patch(map.next_value::<Option<u32>>()?),
        Kind::U64 { .. } => patch(map.next_value::<Option<u64>>()?),
        Kind::Float { .. } => patch(map.next_value::<Option<f64>>()?),
        Kind::Name { .. } | Kind::Prompt { .. } | Kind::Url | Kind::Choice { .. } => {
            patch(map.next_value::<Option<String>>()?)
        }
        Kind::Keywords => patch(map.next_value::<Option<Vec<String>>>()?),
        Kind::Hours => patch(map.next_value::<Option<BusinessHours>>()?),
    })
}

impl utoipa::PartialSchema for ChatAiRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
        let mut object = ObjectBuilder::new()
            .description(Some(
                "A change to a chat's own layer. Omitted fields keep their value; `null` \
                 inherits (for `custom_system_prompt`: removes it).",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .property("mode", utoipa::openapi::Ref::from_schema_name("AiMode"))
            .property(
                "custom_system_prompt",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .max_length(Some(wagate_events::settings::MAX_PROMPT_BYTES))
                    .pattern(Some(r"^[^\x00]*$")),
            );
        for spec in FIELDS.iter().filter(|f| f.chat) {
            object = object.property(spec.name, setting_schema(spec, true));
        }
        object.into()
    }
}

impl utoipa::ToSchema for ChatAiRequest {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>) {
        schemas.push((
            AiMode::name().into_owned(),
            <AiMode as utoipa::PartialSchema>::schema(),
        ));
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockedRequest {
    pub blocked: bool,
}

/// Checks the account (exists, caller may act on it) and the JID; returns the chat kind.
fn chat_target(
    app: &SharedApp,
    caller: &Caller,
    acc: &str,
    jid: &str,
) -> Result<ChatKind, ApiError> {
    caller.require_account(acc)?;
    let kind = chat_kind(jid, "jid")?;
    if app.model().account(acc).is_none() {
        return Err(ApiError::not_found("account not found"));
    }
    Ok(kind)
}

fn chat_view(app: &SharedApp, acc: &str, jid: &str) -> ChatAiView {
    let m = app.model();
    let c = m.chat(acc, jid).cloned().unwrap_or_default();
    ChatAiView {
        account_id: acc.to_string(),
        chat_id: jid.to_string(),
        mode: c.mode,
        custom_system_prompt: c.custom_system_prompt,
        blocked: c.blocked,
        settings: c.controls,
    }
}

/// A chat's AI mode and custom prompt.
#[utoipa::path(get, path = "/v1/accounts/{acc}/chats/{jid}/ai", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path, description = "WhatsApp JID, URL-encoded")),
    responses((status = 200, body = ChatAiView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_chat_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
) -> Result<Json<ChatAiView>, ApiError> {
    chat_target(&app, &caller, &acc, &jid)?;
    Ok(Json(chat_view(&app, &acc, &jid)))
}

/// Sets a chat's AI mode (`inherit|enabled|disabled`), custom system prompt and its own
/// conversation controls.
#[utoipa::path(put, path = "/v1/accounts/{acc}/chats/{jid}/ai", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path, description = "WhatsApp JID, URL-encoded")),
    request_body = ChatAiRequest,
    responses((status = 200, body = ChatAiView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn put_chat_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ChatAiRequest>,
) -> Result<Json<ChatAiView>, ApiError> {
    chat_target(&app, &caller, &acc, &jid)?;
    let cmd = ChatSettingsCommand::SetAi {
        mode: req.mode,
        custom_system_prompt: req.custom_system_prompt,
        controls: ChatControlsPatch::from_settings(&req.settings),
    };
    change_chat(&app, &caller.who(), &acc, &jid, cmd).await?;
    Ok(Json(chat_view(&app, &acc, &jid)))
}

/// Whether a chat is blocked.
#[utoipa::path(get, path = "/v1/accounts/{acc}/chats/{jid}/blocked", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path)),
    responses((status = 200, body = ChatAiView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_chat_blocked(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
) -> Result<Json<ChatAiView>, ApiError> {
    chat_target(&app, &caller, &acc, &jid)?;
    Ok(Json(chat_view(&app, &acc, &jid)))
}

/// Blocks or unblocks a chat: a blocked chat is never answered.
#[utoipa::path(put, path = "/v1/accounts/{acc}/chats/{jid}/blocked", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path)),
    request_body = BlockedRequest,
    responses((status = 200, body = ChatAiView)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn put_chat_blocked(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<BlockedRequest>,
) -> Result<Json<ChatAiView>, ApiError> {
    chat_target(&app, &caller, &acc, &jid)?;
    let cmd = ChatSettingsCommand::SetBlocked {
        blocked: req.blocked,
    };
    change_chat(&app, &caller.who(), &acc, &jid, cmd).await?;
    Ok(Json(chat_view(&app, &acc, &jid)))
}

/// Ends a human-takeover pause in a chat now (the AI answers the next customer message). A chat
/// that is not paused is left as it is. Answers the effective config after the change.
#[utoipa::path(post, path = "/v1/accounts/{acc}/chats/{jid}/ai/resume", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path, description = "WhatsApp JID, URL-encoded")),
    responses((status = 200, description = "effective config after the resume", body = Object)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn resume_chat_ai(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
) -> Result<Json<Effective>, ApiError> {
    let kind = chat_target(&app, &caller, &acc, &jid)?;
    resume_chat(&app, &caller.who(), &acc, &jid).await?;
    effective::resolve(&app.model(), &app.env_layer, &acc, &jid, kind)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("account not found"))
}

/// An account's model token use today and its daily budget.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountUsage {
    pub account_id: String,
    /// The UTC day counted.
    pub day: chrono::NaiveDate,
    /// `total_tokens` of the replies generated and the transcriptions made today (UTC), folded
    /// from the events.
    pub tokens_used: u64,
    /// The effective `daily_token_budget` of the account (0 = no budget).
    pub daily_token_budget: u64,
    /// Tokens left today (`null` without a budget).
    pub tokens_remaining: Option<u64>,
}

/// Token use of an account today (UTC) against its `daily_token_budget`.
#[utoipa::path(get, path = "/v1/accounts/{acc}/ai/usage", tag = "ai", params(("acc" = AccountId, Path)),
    responses((status = 200, body = AccountUsage)),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_account_usage(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath(acc): ApiPath<String>,
) -> Result<Json<AccountUsage>, ApiError> {
    caller.require_account(&acc)?;
    // As the replies count it: an account's budget above the admin's, on the admin's key, is
    // capped (ADR 0022).
    let budget = effective::account_daily_token_budget(&app.model(), &app.env_layer, &acc)
        .ok_or_else(|| ApiError::not_found("account not found"))?
        .value;
    let day = Utc::now().date_naive();
    let tokens_used = app.messages().tokens_on(&acc, day);
    Ok(Json(AccountUsage {
        account_id: acc,
        day,
        tokens_used,
        daily_token_budget: budget,
        tokens_remaining: (budget > 0).then(|| budget.saturating_sub(tokens_used)),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    /// An RFC 3339 time or an event position: answer from history as of then.
    pub as_of: Option<String>,
}

/// The effective config of a chat: each field with its value and `source`
/// (`chat|account|global|env|default`), plus `will_reply`, `reason` (the human text) and
/// `reason_code` (its stable code, docs/API.md "Reply reasons").
#[utoipa::path(get, path = "/v1/accounts/{acc}/chats/{jid}/ai/effective", tag = "ai",
    params(("acc" = AccountId, Path), ("jid" = Jid, Path), AsOfQuery),
    responses((status = 200, description = "effective config with provenance", body = Object),
        (status = 503, body = ErrorBody, description = "reads the event store, which is unavailable; retry after `Retry-After` seconds")),
    security(("admin_jwt" = []), ("account_token" = [])))]
async fn get_effective(
    State(app): State<SharedApp>,
    caller: Caller,
    ApiPath((acc, jid)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<AsOfQuery>,
) -> Result<Json<Effective>, ApiError> {
    caller.require_account(&acc)?;
    let kind = chat_kind(&jid, "jid")?;
    // Chat actors commit pauses without waiting for the read model: fold what they committed so
    // the answer reflects every write that finished before this request (free when nothing is
    // pending; a store read and the fold lock on every request made this route 10× slower).
    app.catch_up_own().await?;
    let resolved = match q.as_of.as_deref().map(str::trim) {
        None | Some("") => effective::resolve(&app.model(), &app.env_layer, &acc, &jid, kind),
        Some(raw) => {
            // A pause counts as of the time asked about (now, for a position).
            let (position, at) = match raw.parse::<i64>() {
                Ok(p) if p >= 0 => (p, Utc::now()),
                Ok(_) => return Err(ApiError::invalid("as_of", "a position is >= 0")),
                Err(_) => {
                    let t = DateTime::parse_from_rfc3339(raw)
                        .map_err(|_| {
                            ApiError::invalid(
                                "as_of",
                                "expected an RFC 3339 time or an event position",
                            )
                        })?
                        .with_timezone(&Utc);
                    let p = app
                        .store
                        .position_at(t)
                        .await
                        .map_err(crate::app::AppError::from)?;
                    (p, t)
                }
            };
            let model = app.model_at(position).await?;
            effective::resolve_at(&model, &app.env_layer, &acc, &jid, kind, at)
        }
    };
    resolved
        .map(Json)
        .ok_or_else(|| ApiError::not_found("account not found (at that time)"))
}
