//! What makes the generated OpenAPI document exact beyond the handlers' own annotations: the
//! error answers every operation of a kind shares (added here once instead of on every handler),
//! the schemas of the ids that appear in paths, and the links from create operations to the
//! operations that use the ids they return. `scripts/schemathesis.sh` checks the result against
//! a live server.

use std::borrow::Cow;

use utoipa::openapi::content::Content;
use utoipa::openapi::header::Header;
use utoipa::openapi::link::Link;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::{Object, ObjectBuilder, OneOf, Schema, Type};
use utoipa::openapi::{OpenApi, Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};
use wagate_events::settings::{self, FieldSpec, Kind};

/// `[a-z0-9][a-z0-9_-]{0,62}`, as `wagate_events::ids::validate_account_id` checks it.
pub const ACCOUNT_ID_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

/// The JIDs `wagate_events::ids::chat_kind` accepts: a user part of at most 64 characters
/// (digits; digits and `-` for groups) and a known server, or `status@broadcast`.
pub const JID_PATTERN: &str =
    "^([0-9]{1,64}@(s\\.whatsapp\\.net|lid|newsletter|broadcast)|[0-9-]{1,64}@g\\.us|status@broadcast)$";

/// An account id (the slug chosen at creation), as a path or query parameter.
pub struct AccountId;

impl PartialSchema for AccountId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(ACCOUNT_ID_PATTERN))
            .min_length(Some(1))
            .max_length(Some(63))
            .description(Some("An account id: `[a-z0-9][a-z0-9_-]{0,62}`."))
            .into()
    }
}

impl ToSchema for AccountId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AccountId")
    }
}

/// A WhatsApp chat JID (URL-encoded in paths).
pub struct Jid;

impl PartialSchema for Jid {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(JID_PATTERN))
            .max_length(Some(80))
            .description(Some(
                "A WhatsApp JID: `<digits>@s.whatsapp.net`, `<digits>@lid`, `<id>@g.us`, \
                 `<digits>@newsletter` or `status@broadcast`.",
            ))
            .into()
    }
}

impl ToSchema for Jid {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Jid")
    }
}

/// The transports an account can use (`transport` of `POST /v1/accounts`).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum TransportName {
    Sandbox,
    CloudApi,
    WhatsappWeb,
}

/// A chat's AI mode: inherit the layers above, or force AI on or off.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum AiMode {
    Inherit,
    Enabled,
    Disabled,
}

/// An event type a webhook subscribes to, or `*` for all of them.
#[derive(ToSchema)]
pub enum WebhookEventType {
    #[schema(rename = "message.received")]
    MessageReceived,
    #[schema(rename = "message.sent")]
    MessageSent,
    #[schema(rename = "ai.reply.generated")]
    AiReplyGenerated,
    #[schema(rename = "ai.reply.sent")]
    AiReplySent,
    #[schema(rename = "ai.reply.failed")]
    AiReplyFailed,
    #[schema(rename = "ai.reply.skipped")]
    AiReplySkipped,
    #[schema(rename = "ai.handoff.requested")]
    AiHandoffRequested,
    #[schema(rename = "ai.config.changed")]
    AiConfigChanged,
    #[schema(rename = "account.owner.changed")]
    AccountOwnerChanged,
    #[schema(rename = "account.connection")]
    AccountConnection,
    #[schema(rename = "*")]
    All,
}

/// The `status` filter of `GET /v1/ai/logs`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum LogStatus {
    Pending,
    Generated,
    Sent,
    Failed,
    Skipped,
}

/// The `status` filter of `GET /v1/webhooks/{id}/deliveries`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
    Cancelled,
}

/// The shared error answers: (component name, status, description, carries `Retry-After`).
const SHARED: &[(&str, &str, &str, bool)] = &[
    (
        "BadRequest",
        "400",
        "Malformed or invalid input: a path or query parameter that does not parse, malformed \
         JSON, a missing, unknown or invalid field (`field` names it).",
        false,
    ),
    (
        "Unauthorized",
        "401",
        "No credentials, or a bad, expired or revoked token.",
        false,
    ),
    (
        "Forbidden",
        "403",
        "Valid credentials of the wrong scope (an account token on an admin route or another \
         account's route).",
        false,
    ),
    (
        "NotFound",
        "404",
        "The account, chat, webhook, token or delivery named in the path does not exist.",
        false,
    ),
    (
        "RequestTimeout",
        "408",
        "The request body did not arrive within `WAGATE_BODY_READ_TIMEOUT`.",
        false,
    ),
    (
        "PayloadTooLarge",
        "413",
        "The request body is larger than 256 KiB.",
        false,
    ),
    (
        "UnsupportedMediaType",
        "415",
        "The body is not sent as `Content-Type: application/json`.",
        false,
    ),
    (
        "RateLimited",
        "429",
        "This token made more requests than `WAGATE_API_RATE_LIMIT_PER_SECOND` (with bursts of \
         `WAGATE_API_RATE_LIMIT_BURST`); retry after `Retry-After` seconds.",
        true,
    ),
    (
        "Unavailable",
        "503",
        "The event store is unavailable or a write kept conflicting; retry after `Retry-After` \
         seconds.",
        true,
    ),
];

fn error_response(description: &str, retry_after: bool) -> Response {
    let mut r = Response::new(description);
    r.content.insert(
        "application/json".to_string(),
        RefOr::T(Content::new(Some(Ref::from_schema_name("ErrorBody")))),
    );
    if retry_after {
        let mut h = Header::new(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        );
        h.description = Some("Seconds to wait before retrying.".to_string());
        r.headers.insert("Retry-After".to_string(), RefOr::T(h));
    }
    r
}

/// Operations that read their body as raw bytes (Meta's webhook: the signature covers the exact
/// body), so they neither check its Content-Type nor answer the API's JSON 413; the shared 413 and
/// 415 are not theirs.
const RAW_BODY: &[&str] = &["receive_webhook"];

/// Links from the answer of a create operation: (operation, status, link name, target
/// operation, parameters as runtime expressions).
type LinkSpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const BY_BODY_ID: &[(&str, &str)] = &[("acc", "$response.body#/id")];
const TOKEN: &[(&str, &str)] = &[("acc", "$request.path.acc"), ("id", "$response.body#/id")];
const WEBHOOK: &[(&str, &str)] = &[("id", "$response.body#/id")];
const CHAT: &[(&str, &str)] = &[
    ("acc", "$request.path.acc"),
    ("jid", "$request.body#/chat_id"),
];

const LINKS: &[LinkSpec] = &[
    (
        "create_account",
        "201",
        "GetAccount",
        "get_account",
        BY_BODY_ID,
    ),
    (
        "create_account",
        "201",
        "DeleteAccount",
        "delete_account",
        BY_BODY_ID,
    ),
    (
        "create_account",
        "201",
        "ChangeCloudApi",
        "change_cloud_api",
        BY_BODY_ID,
    ),
    (
        "create_account",
        "201",
        "CreateToken",
        "create_token",
        BY_BODY_ID,
    ),
    (
        "create_account",
        "201",
        "ListTokens",
        "list_tokens",
        BY_BODY_ID,
    ),
    (
        "create_account",
        "201",
        "GetAccountAi",
        "get_account_ai",
        BY_BODY_ID,
    ),
    (
        "create_account",
        "201",
        "PutAccountAi",
        "put_account_ai",
        BY_BODY_ID,
    ),
    (
        "create_account",
        "201",
        "GetAccountUsage",
        "get_account_usage",
        BY_BODY_ID,
    ),
    (
        "create_account",
        "201",
        "ListChats",
        "list_chats",
        BY_BODY_ID,
    ),
    (
        "create_account",
        "201",
        "InjectInbound",
        "sandbox_inbound",
        BY_BODY_ID,
    ),
    ("create_token", "201", "RevokeToken", "revoke_token", TOKEN),
    (
        "sandbox_inbound",
        "202",
        "ListMessages",
        "list_messages",
        CHAT,
    ),
    (
        "sandbox_inbound",
        "202",
        "SendMessage",
        "send_message",
        CHAT,
    ),
    ("sandbox_inbound", "202", "GetChatAi", "get_chat_ai", CHAT),
    ("sandbox_inbound", "202", "PutChatAi", "put_chat_ai", CHAT),
    (
        "sandbox_inbound",
        "202",
        "ResumeChatAi",
        "resume_chat_ai",
        CHAT,
    ),
    (
        "sandbox_inbound",
        "202",
        "GetChatBlocked",
        "get_chat_blocked",
        CHAT,
    ),
    (
        "sandbox_inbound",
        "202",
        "PutChatBlocked",
        "put_chat_blocked",
        CHAT,
    ),
    (
        "sandbox_inbound",
        "202",
        "GetEffective",
        "get_effective",
        CHAT,
    ),
    (
        "create_webhook",
        "201",
        "GetWebhook",
        "get_webhook",
        WEBHOOK,
    ),
    (
        "create_webhook",
        "201",
        "DeleteWebhook",
        "delete_webhook",
        WEBHOOK,
    ),
    (
        "create_webhook",
        "201",
        "ListDeliveries",
        "list_deliveries",
        WEBHOOK,
    ),
];

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}

fn shared_ref(name: &str) -> RefOr<Response> {
    RefOr::Ref(Ref::new(format!("#/components/responses/{name}")))
}

/// The pattern of an absolute http(s) URL the validation accepts (no credentials, query or
/// fragment).
pub(crate) const URL_PATTERN: &str = r"^[hH][tT][tT][pP][sS]?://[a-zA-Z0-9]+([.-][a-zA-Z0-9]+)*(:[1-9][0-9]{0,3})?(/[a-zA-Z0-9._~-]*)*$";
/// A name: not blank, no NUL.
pub(crate) const NAME_PATTERN: &str = r"^[^\x00]*[^\s\x00][^\x00]*$";
/// A prompt: anything but NUL.
pub(crate) const PROMPT_PATTERN: &str = r"^[^\x00]*$";
/// A key: printable, not blank.
pub(crate) const KEY_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// The schema of one setting's value (or `null`), from its row in the settings table; a request
/// carries the validation's constraints, a view only the type's.
pub(crate) fn setting_schema(spec: &FieldSpec, request: bool) -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
    let typed = |t: Type| ObjectBuilder::new().schema_type(SchemaType::from_iter([t, Type::Null]));
    let format = |f: KnownFormat| Some(SchemaFormat::KnownFormat(f));
    let text = |max: usize, pattern: &str| {
        let b = typed(Type::String);
        if request {
            b.max_length(Some(max)).pattern(Some(pattern))
        } else {
            b
        }
    };
    let builder = match spec.kind {
        Kind::Bool => typed(Type::Boolean),
        Kind::Name { max } => text(max, NAME_PATTERN),
        Kind::Prompt { max } => text(max, PROMPT_PATTERN),
        Kind::Url => text(settings::MAX_URL, URL_PATTERN),
        Kind::Float { min, max } => {
            let b = typed(Type::Number).format(format(KnownFormat::Double));
            if request {
                b.minimum(Some(min)).maximum(Some(max))
            } else {
                b
            }
        }
        Kind::U32 { min, max } => {
            let b = typed(Type::Integer).format(format(KnownFormat::Int32));
            if request {
                b.minimum(Some(min)).maximum(Some(max))
            } else {
                b.minimum(Some(0))
            }
        }
        Kind::U64 { min, max } => {
            let b = typed(Type::Integer).format(format(KnownFormat::Int64));
            if request {
                b.minimum(Some(min)).maximum(Some(max))
            } else {
                b.minimum(Some(0))
            }
        }
        Kind::Choice { options } => typed(Type::String).enum_values(Some(
            options
                .iter()
                .map(|o| Some(*o))
                .chain(std::iter::once(None::<&str>)),
        )),
        Kind::Keywords => {
            use wagate_events::matcher::{MAX_KEYWORDS, MAX_KEYWORD_LEN};
            let mut item = ObjectBuilder::new().schema_type(Type::String);
            if request {
                item = item
                    .min_length(Some(1))
                    .max_length(Some(MAX_KEYWORD_LEN))
                    .pattern(Some(r"\S"));
            }
            let mut array = utoipa::openapi::schema::ArrayBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                .items(item);
            if request {
                array = array.max_items(Some(MAX_KEYWORDS));
            }
            return array.description(Some(spec.help)).into();
        }
        Kind::Hours => {
            let hhmm = |close: bool| {
                let b = ObjectBuilder::new().schema_type(Type::String);
                match (request, close) {
                    (false, _) => b,
                    (true, false) => b.pattern(Some(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")),
                    (true, true) => b.pattern(Some(r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")),
                }
            };
            let range = ObjectBuilder::new()
                .property(
                    "days",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some(
                            "mon..sun, a span (mon-fri), a comma list (mon,wed,fri) or daily",
                        )),
                )
                .required("days")
                .property("open", hhmm(false))
                .required("open")
                .property("close", hhmm(true))
                .required("close")
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ));
            let mut ranges = utoipa::openapi::schema::ArrayBuilder::new().items(range);
            if request {
                ranges = ranges
                    .min_items(Some(1))
                    .max_items(Some(wagate_events::hours::MAX_RANGES));
            }
            typed(Type::Object)
                .property(
                    "time_zone",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("An IANA time zone, e.g. Europe/Lisbon")),
                )
                .required("time_zone")
                .property("ranges", ranges)
                .required("ranges")
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ))
        }
    };
    builder.description(Some(spec.help)).into()
}

/// Completes the document the handlers generate (see the module doc).
pub fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    // Parameters name these schemas by reference; utoipa collects only those of bodies.
    components
        .schemas
        .insert(AccountId::name().into_owned(), AccountId::schema());
    components
        .schemas
        .insert(Jid::name().into_owned(), Jid::schema());
    components
        .schemas
        .insert(LogStatus::name().into_owned(), LogStatus::schema());
    components.schemas.insert(
        crate::service::stats::Period::name().into_owned(),
        crate::service::stats::Period::schema(),
    );
    components.schemas.insert(
        DeliveryStatus::name().into_owned(),
        DeliveryStatus::schema(),
    );
    for (name, _, description, retry_after) in SHARED {
        components.responses.insert(
            (*name).to_string(),
            RefOr::T(error_response(description, *retry_after)),
        );
    }
    let shared = |status: &str| {
        SHARED
            .iter()
            .find(|(_, s, _, _)| *s == status)
            .map(|(name, ..)| shared_ref(name))
            .expect("a shared response")
    };

    transport_variants(&mut components.schemas);

    for item in doc.paths.paths.values_mut() {
        for (method, op) in operations_mut(item) {
            let params = op.parameters.iter().flatten();
            let (mut in_path, mut in_query_or_path) = (false, false);
            for p in params {
                if let RefOr::T(p) = p {
                    in_path |= p.parameter_in == ParameterIn::Path;
                    in_query_or_path |=
                        matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query);
                }
            }
            let body = op.request_body.as_ref().is_some_and(
                |b| matches!(b, RefOr::T(b) if b.content.contains_key("application/json")),
            );
            let raw_body = op
                .operation_id
                .as_deref()
                .is_some_and(|id| RAW_BODY.contains(&id));
            let json_body = body && !raw_body;
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let responses = &mut op.responses.responses;
            let mut add = |status: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| shared(status));
            };
            // A parameter that does not parse, or a body that does not deserialize.
            if in_query_or_path || body {
                add("400");
            }
            if secured {
                add("401");
                add("403");
                add("429");
                // A token's revocation is checked against the store (ADR 0017).
                add("503");
            }
            if body {
                add("408");
            }
            if in_path {
                add("404");
            }
            if json_body {
                add("413");
                add("415");
            }
            // Every change goes through the event store.
            if method != "get" {
                add("503");
            }
            // utoipa leaves a response without a description empty; the format requires one.
            for (status, r) in responses.iter_mut() {
                if let RefOr::T(r) = r {
                    if r.description.is_empty() {
                        r.description = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Response")
                            .to_string();
                    }
                }
            }
        }
    }

    for (from, status, name, to, params) in LINKS {
        let mut link = Link::builder().operation_id(*to);
        for (param, expr) in *params {
            link = link.parameter(*param, *expr);
        }
        let link = link.build();
        let found = doc
            .paths
            .paths
            .values_mut()
            .flat_map(operations_mut)
            .find(|(_, op)| op.operation_id.as_deref() == Some(*from))
            .and_then(|(_, op)| op.responses.responses.get_mut(*status));
        match found {
            Some(RefOr::T(r)) => {
                r.links.insert((*name).to_string(), RefOr::T(link));
            }
            _ => panic!("OpenAPI link {name}: no {status} answer of operation {from}"),
        }
    }
}

/// `POST /v1/accounts` takes `cloud_api` settings exactly when `transport` is `cloud_api`: the
/// derived object becomes one variant per transport.
fn transport_variants(schemas: &mut std::collections::BTreeMap<String, RefOr<Schema>>) {
    let Some(RefOr::T(Schema::Object(derived))) = schemas.get("CreateAccountRequest") else {
        panic!("CreateAccountRequest is an object schema");
    };
    let variant = |transport: &str, cloud_api: Option<RefOr<Schema>>| -> RefOr<Schema> {
        let mut v: Object = derived.clone();
        v.description = None;
        v.properties.insert(
            "transport".to_string(),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([transport]))
                .into(),
        );
        match cloud_api {
            Some(schema) => {
                v.properties.insert("cloud_api".to_string(), schema);
                v.required.push("cloud_api".to_string());
            }
            None => {
                v.properties.insert(
                    "cloud_api".to_string(),
                    ObjectBuilder::new().schema_type(Type::Null).into(),
                );
            }
        }
        RefOr::T(Schema::Object(v))
    };
    let mut one_of = OneOf::new();
    one_of.description = Some(
        "A new account: `sandbox` (the embedded transport, no `cloud_api`) or `cloud_api` \
         (Meta's WhatsApp Business Cloud API, with its `cloud_api` settings)."
            .to_string(),
    );
    one_of.items = vec![
        variant("sandbox", None),
        variant(
            "cloud_api",
            Some(RefOr::Ref(Ref::from_schema_name("CloudApiRequest"))),
        ),
    ];
    schemas.insert(
        "CreateAccountRequest".to_string(),
        RefOr::T(Schema::OneOf(one_of)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use wagate_events::ids::{chat_kind, validate_account_id};

    fn matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    /// The documented patterns accept exactly what the validators accept.
    #[test]
    fn patterns_match_the_validators() {
        let ids = [
            "a", "acme", "acme-1", "0_x", "", "-a", "_a", "Acme", "a b", "a/b", "é", "a\n",
        ];
        let long = ["a".repeat(63), "a".repeat(64)];
        for id in ids.iter().copied().chain(long.iter().map(String::as_str)) {
            assert_eq!(
                matches(ACCOUNT_ID_PATTERN, id),
                validate_account_id(id).is_ok(),
                "{id:?}"
            );
        }
        let jids = [
            "491701234567@s.whatsapp.net",
            "123456789@lid",
            "120363042@g.us",
            "4917012-1600000000@g.us",
            "120363@newsletter",
            "status@broadcast",
            "123@broadcast",
            "abc@s.whatsapp.net",
            "@s.whatsapp.net",
            "12@example.com",
            "12-3@lid",
            "12@g.us.x",
            "x12@g.us",
            "status@lid",
        ];
        let long = [
            format!("{}@lid", "1".repeat(64)),
            format!("{}@lid", "1".repeat(65)),
        ];
        for jid in jids.iter().copied().chain(long.iter().map(String::as_str)) {
            assert_eq!(
                matches(JID_PATTERN, jid),
                chat_kind(jid, "jid").is_ok(),
                "{jid:?}"
            );
            if chat_kind(jid, "jid").is_ok() {
                assert!(jid.len() <= 80, "{jid}");
            }
        }
    }

    /// Every `$ref` in the document points at something the document holds.
    #[test]
    fn every_reference_resolves() {
        fn walk(v: &serde_json::Value, root: &serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                        let pointer = r.strip_prefix('#').expect("a local reference");
                        assert!(root.pointer(pointer).is_some(), "dangling {r}");
                    }
                    m.values().for_each(|v| walk(v, root));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, root)),
                _ => {}
            }
        }
        let (_, doc) = super::super::api();
        let json = serde_json::to_value(&doc).unwrap();
        walk(&json, &json);
    }

    /// The documented enums list exactly the values the server accepts.
    #[test]
    fn enums_match_the_server() {
        let values = |schema: RefOr<Schema>| -> Vec<String> {
            let json = serde_json::to_value(schema).unwrap();
            let mut v: Vec<String> = json["enum"]
                .as_array()
                .or_else(|| json["oneOf"].as_array())
                .expect("an enum")
                .iter()
                .flat_map(|e| match e {
                    serde_json::Value::String(s) => vec![s.clone()],
                    other => other["enum"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect(),
                })
                .collect();
            v.sort();
            v
        };
        let mut events: Vec<String> = wagate_events::webhook::EVENT_TYPES
            .iter()
            .map(|s| s.to_string())
            .chain(["*".to_string()])
            .collect();
        events.sort();
        assert_eq!(values(WebhookEventType::schema()), events);
        for mode in values(AiMode::schema()) {
            let parsed: wagate_events::chat_settings::ChatMode =
                serde_json::from_value(serde_json::Value::String(mode.clone())).unwrap();
            assert_eq!(serde_json::to_value(parsed).unwrap(), mode);
        }
        assert_eq!(
            values(TransportName::schema()),
            ["cloud_api", "sandbox", "whatsapp_web"]
        );
        let mut deliveries = crate::http::webhooks::DELIVERY_STATUSES.to_vec();
        deliveries.sort_unstable();
        assert_eq!(values(DeliveryStatus::schema()), deliveries);
        let mut periods: Vec<&str> = crate::service::stats::Period::ALL
            .iter()
            .map(|p| p.as_str())
            .collect();
        periods.sort_unstable();
        assert_eq!(values(crate::service::stats::Period::schema()), periods);
    }

    #[test]
    fn every_operation_documents_its_shared_errors() {
        let (_, doc) = super::super::api();
        let json = serde_json::to_value(&doc).unwrap();
        let get = json["paths"]["/v1/accounts"]["get"]["responses"].clone();
        assert!(get.get("401").is_some() && get.get("403").is_some());
        let post = json["paths"]["/v1/accounts"]["post"]["responses"].clone();
        for s in ["400", "401", "403", "413", "415", "503"] {
            assert!(post.get(s).is_some(), "POST /v1/accounts lacks {s}");
        }
        assert_eq!(
            post["201"]["links"]["GetAccount"]["parameters"]["acc"],
            "$response.body#/id"
        );
    }
}
