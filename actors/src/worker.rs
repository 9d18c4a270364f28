//! A reply worker: one short-lived actor per reply. It waits out the burst-debounce window (a
//! newer message supersedes it meanwhile), re-evaluates the rules from the effective config and
//! the conversation controls (human takeover, hourly cap, daily token budget), builds the prompt
//! (system prompt + the newest turns that fit the history budget), calls the model within the
//! concurrency limits (retrying, then the fallback model), records the generated reply with every
//! attempt, waits `reply_delay_seconds`, and delivers: the chat decides whether the reply is sent
//! and reserves the send, the worker shows typing and calls the transport, the chat records the
//! outcome. Every step is committed by the chat actor; the worker holds nothing that a crash could
//! lose except time (a crash after the transport took a reply closes it as interrupted: never sent
//! twice).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Semaphore;
use wagate_events::chat::{keeps_bytes, MessageKind, ModelAttempt, SentPart, TokenUsage, Turn};
use wagate_events::reason::{ModelErrorClass, ReplyReason, SupersededAt};

use crate::account::AccountHandle;
use crate::chat::{ChatMsg, Delivery, GeneratedReply, ReplyContext, Reservation, SendOutcome};
use crate::ports::{
    ActorError, ModelAnswer, ModelCall, Owner, Ports, PromptRole, ReplyConfig, SendError,
    StoreFailure, TranscribeCall,
};
use crate::retry::RetryPolicy;

pub struct ReplyWorker;

pub struct WorkerArgs {
    /// The account's handle: its session (sends) and model-call slots.
    pub account: Arc<AccountHandle>,
    pub jid: String,
    pub reply_id: String,
    pub chat: ActorRef<ChatMsg>,
    pub ports: Arc<Ports>,
}

pub enum WorkerMsg {
    Run,
}

/// Why a worker could not finish a step with its chat (the reply stays open; the chat closes it
/// as `worker_stopped` when the worker ends).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("chat actor did not answer in time")]
    ChatTimeout,
    #[error("chat actor is gone")]
    ChatGone,
    #[error(transparent)]
    Actor(#[from] ActorError),
}

async fn ask<T: Send + 'static>(
    args: &WorkerArgs,
    build: impl FnOnce(RpcReplyPort<T>) -> ChatMsg,
) -> Result<T, StepError> {
    ask_chat(&args.chat, args.ports.call_timeout, build).await
}

async fn ask_chat<T: Send + 'static>(
    chat: &ActorRef<ChatMsg>,
    timeout: Duration,
    build: impl FnOnce(RpcReplyPort<T>) -> ChatMsg,
) -> Result<T, StepError> {
    match chat.call(build, Some(timeout)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(StepError::ChatTimeout),
        Ok(CallResult::SenderError) | Err(_) => Err(StepError::ChatGone),
    }
}

/// The most a refused send waits before its next try, however often `send_backoff` doubled.
const SEND_RETRY_CAP: Duration = Duration::from_secs(30);

/// Asks the chat to commit one step, retrying while the store is only temporarily unavailable
/// (pool exhausted under load), so a busy store delays a reply instead of dropping it.
async fn step<T: Send + 'static>(
    args: &WorkerArgs,
    build: impl Fn(RpcReplyPort<Result<T, ActorError>>) -> ChatMsg,
) -> Result<T, StepError> {
    commit_step(&args.chat, args.ports.call_timeout, &args.reply_id, build).await
}

/// Asks `chat` to commit one step (`what` names it in logs), retrying only while the chat answers
/// that the store is temporarily unavailable: then nothing was committed, so asking again cannot
/// record anything twice. A chat that does not answer in time is not asked again (it may still
/// commit the step).
pub(crate) async fn commit_step<T: Send + 'static>(
    chat: &ActorRef<ChatMsg>,
    timeout: Duration,
    what: &str,
    build: impl Fn(RpcReplyPort<Result<T, ActorError>>) -> ChatMsg,
) -> Result<T, StepError> {
    let build = &build;
    crate::retry::STORE_BUSY
        .run(
            || async move {
                match ask_chat(chat, timeout, build).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(StepError::Actor(e)),
                    Err(e) => Err(e),
                }
            },
            |e| matches!(e, StepError::Actor(ActorError::Unavailable(_))),
            |_| None,
            |e, wait| {
                if let StepError::Actor(cause) = e {
                    tracing::debug!(step = %what, cause = %cause, wait_ms = wait.as_millis() as u64, "store busy; retrying step");
                }
            },
        )
        .await
}

/// The documented token estimate of one prompt message: a quarter of its characters, rounded
/// up, plus 4 for the message's framing. Deliberately simple (no tokenizer per model); it errs
/// high for English and low for some scripts, so the budget is a bound on size, not a bill.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4) + 4
}

/// The documented token estimate of an image sent to the model (`vision`): 765, what OpenAI
/// bills a 1024×1024 image at high detail (85 + 4 tiles of 170), whatever its real size.
pub const IMAGE_TOKENS: u64 = 765;

/// Whether `turn` is an image or sticker the model can be shown.
fn is_image(turn: &Turn) -> bool {
    turn.media
        .as_ref()
        .is_some_and(|m| matches!(m.kind, MessageKind::Image | MessageKind::Sticker))
}

/// [`select_history_with`] without images.
#[cfg(test)]
pub fn select_history(
    history: &[Turn],
    max_history_tokens: u32,
    window: Option<std::time::Duration>,
    now: chrono::DateTime<Utc>,
) -> Vec<Turn> {
    select_history_with(history, max_history_tokens, window, now, &|_| false)
}

/// The turns of the prompt: within the history window, then the newest that fit
/// `max_history_tokens` (0: no budget), oldest first. The newest turn is always kept, so the
/// question is never dropped. A turn `shown(turn)` is sent with its image, which costs
/// [`IMAGE_TOKENS`] more.
pub fn select_history_with(
    history: &[Turn],
    max_history_tokens: u32,
    window: Option<std::time::Duration>,
    now: chrono::DateTime<Utc>,
    shown: &dyn Fn(&Turn) -> bool,
) -> Vec<Turn> {
    let since = window
        .and_then(|w| chrono::Duration::from_std(w).ok())
        .map(|w| now - w);
    let recent: Vec<&Turn> = history
        .iter()
        .filter(|t| match (since, t.at) {
            (Some(since), Some(at)) => at >= since,
            _ => true,
        })
        .collect();
    let mut kept = Vec::new();
    let mut used = 0u64;
    for turn in recent.iter().rev() {
        let cost = estimate_tokens(&turn.text) + if shown(turn) { IMAGE_TOKENS } else { 0 };
        if max_history_tokens > 0 && !kept.is_empty() && used + cost > u64::from(max_history_tokens)
        {
            break;
        }
        used += cost;
        kept.push((*turn).clone());
    }
    kept.reverse();
    kept
}

/// Builds the prompt: the system prompt, then the turns oldest first.
pub fn prompt(system: &str, turns: &[Turn]) -> Vec<(PromptRole, String)> {
    let mut messages = vec![(PromptRole::System, system.to_string())];
    messages.extend(turns.iter().map(|t| {
        let role = if t.inbound {
            PromptRole::User
        } else {
            PromptRole::Assistant
        };
        (role, t.text.clone())
    }));
    messages
}

/// Why a reply is not answered under the conversation controls, if so.
fn control_skip(cfg: &ReplyConfig, ctx: &ReplyContext) -> Option<ReplyReason> {
    if let Some(reason) = &ctx.paused {
        return Some(reason.clone());
    }
    let cap = cfg.max_replies_per_hour;
    if cap > 0 && ctx.replies_last_hour >= cap as usize {
        return Some(ReplyReason::HourlyCap {
            count: ctx.replies_last_hour as u64,
            limit: cap,
        });
    }
    budget_skip(cfg)
}

/// Why no model call is made under the account's daily token budget, if so (echo mode spends
/// nothing). Test replies obey it too.
pub fn budget_skip(cfg: &ReplyConfig) -> Option<ReplyReason> {
    let budget = cfg.daily_token_budget;
    if budget > 0 && !cfg.echo_mode && cfg.tokens_used_today >= budget {
        return Some(ReplyReason::BudgetExhausted {
            used: cfg.tokens_used_today,
            limit: budget,
        });
    }
    None
}

/// The answer of a model call with its attempts, or the failure with its attempts.
struct Called {
    result: Result<ModelAnswer, ReplyReason>,
    attempts: Vec<ModelAttempt>,
    fallback: bool,
}

fn record(model: &str, fallback: bool, outcomes: Vec<String>) -> Vec<ModelAttempt> {
    outcomes
        .into_iter()
        .map(|outcome| ModelAttempt {
            model: model.to_string(),
            fallback,
            outcome,
        })
        .collect()
}

fn model_error(class: ModelErrorClass, status: Option<u16>, message: String) -> ReplyReason {
    ReplyReason::ModelError {
        class,
        status,
        message,
    }
}

/// Calls the primary model (with `max_retries` retries of retryable failures); when it still
/// fails and a fallback model is configured, calls the fallback the same way.
async fn call_model(
    ports: &Ports,
    slots: &Arc<Semaphore>,
    log_id: &str,
    cfg: &ReplyConfig,
    turns: &[Turn],
    images: &HashMap<String, String>,
) -> Called {
    let attempts_each = cfg.max_retries.saturating_add(1);
    // Message 0 is the system prompt: turn i is message i + 1.
    let images = turns
        .iter()
        .enumerate()
        .filter_map(|(i, t)| images.get(&t.message_id).map(|url| (i + 1, url.clone())))
        .collect();
    let call = ModelCall {
        base_url: cfg.base_url.clone(),
        private_networks: cfg.private_networks,
        api_key: cfg.api_key.clone(),
        model: cfg.model.clone(),
        messages: prompt(&cfg.system_prompt, turns),
        temperature: cfg.temperature,
        max_tokens: cfg.max_tokens,
        timeout: cfg.timeout,
        max_attempts: attempts_each,
        handoff_tool: cfg.handoff_tool,
        images,
    };
    let permits = ports.limits.acquire(slots).await;
    // The call is kept for the fallback only when there is one: a call waiting for a slow model
    // holds one copy of its prompt, not two.
    let (first, spare) = match cfg.fallback {
        Some(_) => (ports.model.complete(call.clone()).await, Some(call)),
        None => (ports.model.complete(call).await, None),
    };
    let (failure, mut attempts) = match first {
        Ok(mut a) => {
            return Called {
                attempts: record(&cfg.model, false, std::mem::take(&mut a.attempts)),
                result: Ok(a),
                fallback: false,
            }
        }
        Err(mut f) => {
            let attempts = record(&cfg.model, false, std::mem::take(&mut f.attempts));
            (f, attempts)
        }
    };
    let (Some(fb), Some(call)) = (&cfg.fallback, spare) else {
        return Called {
            result: Err(model_error(failure.class, failure.status, failure.reason)),
            attempts,
            fallback: false,
        };
    };
    tracing::info!(reply_id = %log_id, model = %fb.model, "primary model failed; asking the fallback model");
    let second = ports
        .model
        .complete(ModelCall {
            base_url: fb.base_url.clone(),
            private_networks: fb.private_networks,
            api_key: fb.api_key.clone(),
            model: fb.model.clone(),
            ..call
        })
        .await;
    drop(permits);
    match second {
        Ok(mut a) => {
            attempts.extend(record(&fb.model, true, std::mem::take(&mut a.attempts)));
            Called {
                result: Ok(a),
                attempts,
                fallback: true,
            }
        }
        Err(f) => {
            attempts.extend(record(&fb.model, true, f.attempts));
            Called {
                result: Err(model_error(
                    f.class,
                    f.status,
                    format!("{}; fallback {}: {}", failure.reason, fb.model, f.reason),
                )),
                attempts,
                fallback: true,
            }
        }
    }
}

/// The pipeline's answer step, shared by reply workers and the test routes: the prompt is the
/// system prompt and the newest turns of `history` within the history window and budget; the
/// model is called within the account's concurrency `slots` and the global limit, retrying retryable failures, then the
/// fallback model. Echo mode answers with `trigger_text`. A failure comes with every attempt.
pub async fn generate(
    ports: &Ports,
    slots: &Arc<Semaphore>,
    log_id: &str,
    cfg: &ReplyConfig,
    history: &[Turn],
    trigger_text: &str,
    images: &HashMap<String, String>,
) -> Result<GeneratedReply, (ReplyReason, Vec<ModelAttempt>)> {
    if cfg.echo_mode {
        return Ok(GeneratedReply {
            text: trigger_text.to_string(),
            model: "echo".to_string(),
            usage: TokenUsage::default(),
            latency_ms: 0,
            attempts: vec![],
            fallback: false,
            handoff: None,
        });
    }
    let turns = select_history_with(
        history,
        cfg.max_history_tokens,
        cfg.history_window,
        Utc::now(),
        &|t| images.contains_key(&t.message_id),
    );
    let called = call_model(ports, slots, log_id, cfg, &turns, images).await;
    match called.result {
        // The model handed the chat to a human: the handoff message, else its own words.
        Ok(a) if a.handoff => Ok(GeneratedReply {
            text: match &cfg.handoff_message {
                Some(m) => m.clone(),
                None if a.text.trim().is_empty() => String::new(),
                None => whatsapp_text(cfg, a.text),
            },
            model: a.model,
            usage: a.usage,
            latency_ms: a.latency_ms,
            attempts: called.attempts,
            fallback: called.fallback,
            handoff: Some(cfg.handoff_pause),
        }),
        Ok(a) => Ok(GeneratedReply {
            text: whatsapp_text(cfg, a.text),
            model: a.model,
            usage: a.usage,
            latency_ms: a.latency_ms,
            attempts: called.attempts,
            fallback: called.fallback,
            handoff: None,
        }),
        Err(reason) => Err((reason, called.attempts)),
    }
}

/// The model's answer as it is sent: in WhatsApp's markup when `format_for_whatsapp` (an answer
/// that formats to nothing, such as a lone HTML comment, is kept as it came).
fn whatsapp_text(cfg: &ReplyConfig, text: String) -> String {
    if !cfg.format_for_whatsapp {
        return text;
    }
    let formatted = crate::format::format_for_whatsapp(&text);
    if formatted.trim().is_empty() {
        text
    } else {
        formatted
    }
}

/// Waits out the reply's debounce window (none without debounce). `Ok(Some(ctx))` when the reply
/// is still the one to answer, `Ok(None)` when it was closed or superseded (and recorded so).
async fn debounced(args: &WorkerArgs) -> Result<Option<ReplyContext>, StepError> {
    loop {
        let reply_id = args.reply_id.clone();
        let Some(ctx) = ask(args, |reply| ChatMsg::Context { reply_id, reply }).await? else {
            return Ok(None); // closed meanwhile
        };
        // A newer customer message arrived: its own reply answers the whole conversation, so
        // this one stops before it costs a model call.
        if ctx.superseded {
            let reason = ReplyReason::Superseded {
                at: if ctx.not_before.is_some() {
                    SupersededAt::Debounce
                } else {
                    SupersededAt::Queue
                },
            };
            step(args, |reply| ChatMsg::Skip {
                reply_id: args.reply_id.clone(),
                reason: reason.clone(),
                reply,
            })
            .await?;
            return Ok(None);
        }
        let wait = ctx
            .not_before
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .filter(|w| !w.is_zero());
        match wait {
            None => return Ok(Some(ctx)),
            // Wake at the end of the window (or sooner, to notice a newer message and let the
            // chat start the newest reply's worker without waiting for this one's window).
            Some(w) => tokio::time::sleep(w.min(std::time::Duration::from_millis(250))).await,
        }
    }
}

/// Works on the reply; `trigger_media` learns the trigger's id and its media's SHA-256, whose
/// bytes the trigger no longer needs once the reply settled.
async fn run(
    args: &WorkerArgs,
    trigger_media: &mut Option<(String, String)>,
) -> Result<(), StepError> {
    let reply_id = args.reply_id.clone();
    let skip = |reason: ReplyReason| {
        let reply_id = reply_id.clone();
        move |reply| ChatMsg::Skip {
            reply_id: reply_id.clone(),
            reason: reason.clone(),
            reply,
        }
    };
    let Some(ctx) = debounced(args).await? else {
        return Ok(());
    };
    let trigger_turn_media = ctx
        .history
        .iter()
        .find(|t| t.message_id == ctx.trigger_message_id)
        .and_then(|t| Some((t.message_id.clone(), t.media.as_ref()?)));
    let trigger_unavailable = trigger_turn_media
        .as_ref()
        .and_then(|(_, m)| m.info.unavailable.clone());
    // Media whose bytes were never had keeps nothing to forget.
    *trigger_media = trigger_turn_media
        .filter(|(_, m)| m.info.available() && keeps_bytes(m.kind))
        .map(|(id, m)| (id, m.info.sha256.clone()));
    // A notice, or an answer recorded before a restart: it is delivered as it is.
    if ctx.generated {
        return deliver(args, None).await;
    }
    let cfg = match args
        .ports
        .config
        .reply_config(&args.account.account, &args.jid)
    {
        Ok(cfg) => cfg,
        Err(reason) => return step(args, skip(reason)).await,
    };
    if let Some(reason) = cfg.skip_reason.clone() {
        return step(args, skip(reason)).await;
    }
    if let Err(reason) = ctx.loop_guard.clone() {
        return step(args, skip(reason)).await;
    }
    if let Some(reason) = control_skip(&cfg, &ctx) {
        return step(args, skip(reason)).await;
    }
    let fail = |reason: ReplyReason| {
        let reply_id = reply_id.clone();
        move |reply| ChatMsg::Fail {
            reply_id: reply_id.clone(),
            reason: reason.clone(),
            attempts: vec![],
            reply,
        }
    };
    // The bytes of the trigger's media could not be had at the edge: the reply ends with why,
    // never a silent drop.
    if let Some(why) = trigger_unavailable {
        let detail = format!("not available: {why}");
        return step(args, fail(ReplyReason::MediaFailed { detail })).await;
    }
    let mut history = ctx.history.clone();
    let mut trigger_text = ctx.trigger_text.clone();
    // Documents reach the model as their caption and `[document: <file name>]`.
    for turn in history.iter_mut() {
        if let Some(text) = document_text(turn) {
            if turn.message_id == ctx.trigger_message_id {
                trigger_text = text.clone();
            }
            turn.text = text;
        }
    }
    if let Some(turn) = history
        .iter_mut()
        .find(|t| t.message_id == ctx.trigger_message_id && t.needs_transcript())
    {
        match transcribe(args, &cfg, turn).await? {
            Ok(text) => {
                turn.text = text.clone();
                trigger_text = text;
                if let Some(m) = turn.media.as_mut() {
                    m.transcribed = true;
                }
            }
            Err(Heard::Off) => return step(args, skip(ReplyReason::TranscriptionOff)).await,
            Err(Heard::Failed(detail)) => {
                return step(args, fail(ReplyReason::MediaFailed { detail })).await
            }
        }
    }
    let images = if cfg.vision {
        match shown_images(args, &history).await? {
            Ok(images) => images,
            Err(detail) => return step(args, fail(ReplyReason::MediaFailed { detail })).await,
        }
    } else {
        HashMap::new()
    };
    let generated = match generate(
        &args.ports,
        &args.account.model_slots,
        &args.reply_id,
        &cfg,
        &history,
        &trigger_text,
        &images,
    )
    .await
    {
        Ok(generated) => generated,
        Err((reason, attempts)) => {
            let reply_id = reply_id.clone();
            return step(args, move |reply| ChatMsg::Fail {
                reply_id: reply_id.clone(),
                reason: reason.clone(),
                attempts: attempts.clone(),
                reply,
            })
            .await;
        }
    };
    // Without a reply delay the answer commits with the reply's sending mark, before the
    // transport is called. With one, it is committed first, so a restart during the delay
    // delivers it instead of asking the model again (ADR 0025).
    if cfg.reply_delay.is_zero() {
        return deliver(args, Some(generated)).await;
    }
    step(args, |reply| ChatMsg::Generated {
        reply_id: reply_id.clone(),
        generated: Box::new(generated.clone()),
        reply,
    })
    .await?;
    tokio::time::sleep(cfg.reply_delay).await;
    deliver(args, None).await
}

/// The images of the conversation's image and sticker turns as `data:` URIs, by message id
/// (`vision`): the trigger's must be kept, older ones whose bytes are gone go as their caption.
async fn shown_images(
    args: &WorkerArgs,
    history: &[Turn],
) -> Result<Result<HashMap<String, String>, String>, StepError> {
    use base64::Engine;
    let mut images = HashMap::new();
    let newest = history
        .iter()
        .rev()
        .find(|t| t.inbound)
        .map(|t| t.message_id.clone());
    for turn in history.iter().filter(|t| is_image(t)) {
        // Media whose bytes were never had goes as its caption (the trigger's ended the reply).
        let Some(media) = turn.media.as_ref().filter(|m| m.info.available()) else {
            continue;
        };
        match args
            .ports
            .streams
            .media(&args.account.account, &media.info.sha256)
            .await
        {
            Ok(Some((mime, bytes))) => {
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                images.insert(
                    turn.message_id.clone(),
                    format!("data:{mime};base64,{data}"),
                );
            }
            Ok(None) if newest.as_deref() == Some(turn.message_id.as_str()) => {
                return Ok(Err("the image's bytes are no longer kept".into()))
            }
            Ok(None) => {}
            Err(e) => return Err(StepError::Actor(e.into())),
        }
    }
    Ok(Ok(images))
}

/// The text a document turn reaches the model with: its caption (when it has one), then
/// `[document: <file name>]` (its MIME type when it has no name); `None` for other turns.
pub fn document_text(turn: &Turn) -> Option<String> {
    let media = turn
        .media
        .as_ref()
        .filter(|m| m.kind == MessageKind::Document)?;
    let label = media
        .info
        .filename
        .as_deref()
        .unwrap_or(media.info.mime_type.as_str());
    let marker = format!("[document: {label}]");
    let caption = turn.text.trim();
    Some(if caption.is_empty() || caption == "[document]" {
        marker
    } else {
        format!("{caption}\n{marker}")
    })
}

/// Why an audio message was not heard.
enum Heard {
    /// No `transcription_model`.
    Off,
    /// The bytes are gone, or the transcription failed or came back empty (the sanitized cause).
    Failed(String),
}

/// Transcribes the audio `turn` with `transcription_model` (within the account's model-call
/// slots) and records the transcript in the chat; the transcript, or why there is none.
async fn transcribe(
    args: &WorkerArgs,
    cfg: &ReplyConfig,
    turn: &Turn,
) -> Result<Result<String, Heard>, StepError> {
    let (Some(model), Some(media)) = (cfg.transcription_model.clone(), turn.media.as_ref()) else {
        return Ok(Err(Heard::Off));
    };
    let bytes = match args
        .ports
        .streams
        .media(&args.account.account, &media.info.sha256)
        .await
    {
        Ok(Some((_, bytes))) => bytes,
        Ok(None) => return Ok(Err(Heard::Failed("the bytes are no longer kept".into()))),
        Err(e) => return Err(StepError::Actor(e.into())),
    };
    let permits = args.ports.limits.acquire(&args.account.model_slots).await;
    let heard = args
        .ports
        .model
        .transcribe(TranscribeCall {
            base_url: cfg.base_url.clone(),
            private_networks: cfg.private_networks,
            api_key: cfg.api_key.clone(),
            model: model.clone(),
            mime_type: media.info.mime_type.clone(),
            bytes,
            timeout: cfg.timeout,
        })
        .await;
    drop(permits);
    let transcript = match heard {
        Ok(t) if t.text.trim().is_empty() => {
            return Ok(Err(Heard::Failed("the transcription is empty".into())))
        }
        Ok(t) => t,
        Err(f) => {
            return Ok(Err(Heard::Failed(format!(
                "transcription failed: {}",
                f.reason
            ))))
        }
    };
    tracing::info!(reply_id = %args.reply_id, model = %model, latency_ms = transcript.latency_ms, "audio transcribed");
    let text = transcript.text.trim().to_string();
    step(args, |reply| ChatMsg::Transcribed {
        message_id: turn.message_id.clone(),
        text: text.clone(),
        model: model.clone(),
        latency_ms: transcript.latency_ms,
        usage: transcript.usage,
        reply,
    })
    .await?;
    Ok(Ok(text))
}

/// Why a delivery try did not send: the transport said "retry later", or the step failed.
enum SendFailure {
    Refused(String),
    Step(StepError),
}

/// One delivery try: the chat decides whether the reply is sent now and reserves the send; this
/// worker shows the typing indicator (a courtesy: when it fails the send still runs) and calls
/// the transport, outside the chat actor, which keeps taking messages; the chat records the
/// outcome.
async fn deliver_once(
    args: &WorkerArgs,
    typing: bool,
    generated: Option<GeneratedReply>,
) -> Result<Delivery, StepError> {
    let reservation = step(args, |reply| ChatMsg::Reserve {
        reply_id: args.reply_id.clone(),
        typing,
        generated: generated.clone().map(Box::new),
        reply,
    })
    .await?;
    let (parts, typing, trigger) = match reservation {
        Reservation::Done => return Ok(Delivery::Done),
        Reservation::Send {
            parts,
            typing,
            trigger,
        } => (parts, typing, trigger),
    };
    // A gateway paused past its lease does not send: the next owner works on the reply (its
    // sending mark, when one was committed, closes it as interrupted: never sent twice).
    if args.ports.ownership.owner(&args.account.account) == Owner::Elsewhere {
        return Err(StepError::Actor(StoreFailure::Fenced.into()));
    }
    let mut outcome = SendOutcome {
        sent: Vec::with_capacity(parts.len()),
        failed: None,
        typed_at: None,
    };
    for (i, text) in parts.into_iter().enumerate() {
        // Each part after the first shows its own indicator.
        let typed_at = if typing || i > 0 {
            show_typing(args, trigger.as_deref()).await
        } else {
            None
        };
        // The first part's retryable refusal is retried by `deliver`, which asks the chat again
        // (the reply may be superseded meanwhile); once the customer has a part, the rest follow.
        let result = if i == 0 {
            args.account.session.send_text(&args.jid, &text).await
        } else {
            send_part(args, &text).await
        };
        match result {
            Ok(message_id) => outcome.sent.push(SentPart {
                message_id,
                text,
                typed_at,
                at: Utc::now(),
            }),
            Err(e) => {
                if i == 0 {
                    outcome.typed_at = typed_at;
                }
                outcome.failed = Some(e);
                break;
            }
        }
    }
    step(args, |reply| ChatMsg::Record {
        reply_id: args.reply_id.clone(),
        outcome: outcome.clone(),
        reply,
    })
    .await
}

/// Shows the typing indicator (a courtesy: when it fails the send still runs); when it showed.
async fn show_typing(args: &WorkerArgs, trigger: Option<&str>) -> Option<chrono::DateTime<Utc>> {
    match args.account.session.typing(&args.jid, trigger).await {
        Ok(()) => Some(Utc::now()),
        Err(e) => {
            tracing::warn!(reply_id = %args.reply_id, reason = %e, "typing indicator not shown");
            None
        }
    }
}

/// Sends a further part of a split reply, retrying the transport's "retry later" as `deliver`
/// does.
async fn send_part(args: &WorkerArgs, text: &str) -> Result<String, SendError> {
    let policy = RetryPolicy {
        max_attempts: args.ports.send_attempts.max(1),
        base_delay: args.ports.send_backoff,
        max_delay: SEND_RETRY_CAP.max(args.ports.send_backoff),
    };
    policy
        .run(
            || args.account.session.send_text(&args.jid, text),
            |e: &SendError| e.retryable,
            |_| None,
            |e, _| {
                tracing::info!(reply_id = %args.reply_id, reason = %e, "part refused for now; retrying");
            },
        )
        .await
}

/// Delivers the reply; when the transport says "retry later" (rate limits), waits
/// `send_backoff`, doubling with jitter (at most 30 s), and tries again up to `send_attempts`
/// times, then records the failure with the last reason.
async fn deliver(args: &WorkerArgs, generated: Option<GeneratedReply>) -> Result<(), StepError> {
    let policy = RetryPolicy {
        max_attempts: args.ports.send_attempts.max(1),
        base_delay: args.ports.send_backoff,
        max_delay: SEND_RETRY_CAP.max(args.ports.send_backoff),
    };
    let tries = AtomicU32::new(0);
    let (tries, generated) = (&tries, &generated);
    let outcome = policy
        .run(
            || async move {
                let attempt = tries.fetch_add(1, Ordering::Relaxed) + 1;
                // The answer is recorded by the first try (in its append, whatever the outcome);
                // the indicator is shown once, before the first try.
                let generated = if attempt == 1 {
                    generated.clone()
                } else {
                    None
                };
                match deliver_once(args, attempt == 1, generated)
                    .await
                    .map_err(SendFailure::Step)?
                {
                    Delivery::Done => Ok(()),
                    Delivery::Retry { reason } => Err(SendFailure::Refused(reason)),
                }
            },
            |e| matches!(e, SendFailure::Refused(_)),
            |_| None,
            |e, _| {
                if let SendFailure::Refused(reason) = e {
                    let attempt = tries.load(Ordering::Relaxed);
                    tracing::info!(reply_id = %args.reply_id, attempt, reason = %reason, "send refused for now; retrying");
                }
            },
        )
        .await;
    match outcome {
        Ok(()) => Ok(()),
        Err(SendFailure::Step(e)) => Err(e),
        Err(SendFailure::Refused(reason)) => {
            let attempt = tries.load(Ordering::Relaxed);
            let reason = ReplyReason::SendFailed {
                attempts: Some(attempt),
                detail: reason,
            };
            step(args, |reply| ChatMsg::Fail {
                reply_id: args.reply_id.clone(),
                reason: reason.clone(),
                attempts: vec![],
                reply,
            })
            .await
        }
    }
}

impl Actor for ReplyWorker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerArgs, ActorProcessingErr> {
        myself.cast(WorkerMsg::Run)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        _: WorkerMsg,
        args: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
        let mut trigger_media = None;
        match run(args, &mut trigger_media).await {
            // The reply settled: its trigger no longer needs its media's bytes (ADR 0028); the
            // transcript and the hash are in the events.
            Ok(()) => {
                if let Some((message_id, sha)) = trigger_media {
                    if let Err(e) = args
                        .ports
                        .streams
                        .forget_media(&args.account.account, &args.jid, &message_id, &sha)
                        .await
                    {
                        tracing::warn!(reply_id = %args.reply_id, error = %e, "media bytes not deleted");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(reply_id = %args.reply_id, error = %e, "reply did not complete");
            }
        }
        let _ = args.chat.cast(ChatMsg::WorkerDone {
            reply_id: args.reply_id.clone(),
        });
        myself.stop(None);
        Ok(())
    }
}

#[cfg(test)]
mod history_tests {
    use chrono::{DateTime, Duration, Utc};
    use wagate_events::chat::Turn;

    use super::{
        document_text, estimate_tokens, select_history, select_history_with, IMAGE_TOKENS,
    };

    /// A document reaches the model as its caption and `[document: <file name>]`.
    #[test]
    fn documents_read_as_caption_and_file_name() {
        use wagate_events::chat::{MediaInfo, MessageKind, TurnMedia};
        let mut t = turn(0, "Here is the invoice", Utc::now());
        assert_eq!(document_text(&t), None);
        t.media = Some(TurnMedia {
            kind: MessageKind::Document,
            info: MediaInfo {
                mime_type: "application/pdf".into(),
                size: 0,
                sha256: String::new(),
                filename: Some("Rechnung.pdf".into()),
                unavailable: None,
            },
            transcribed: false,
        });
        assert_eq!(
            document_text(&t).as_deref(),
            Some("Here is the invoice\n[document: Rechnung.pdf]")
        );
        t.text = "[document]".into();
        if let Some(m) = t.media.as_mut() {
            m.info.filename = None;
        }
        assert_eq!(
            document_text(&t).as_deref(),
            Some("[document: application/pdf]")
        );
    }

    /// An image sent with its turn costs 765 estimated tokens more: a budget that holds three
    /// plain turns holds fewer once one of them is shown as an image.
    #[test]
    fn images_count_against_the_history_budget() {
        let now = Utc::now();
        let turns: Vec<Turn> = (0..3).map(|i| turn(i, "12345678", now)).collect();
        let each = estimate_tokens("12345678");
        let budget = u32::try_from(3 * each + 10).expect("small");
        assert_eq!(select_history(&turns, budget, None, now).len(), 3);
        let shown = |t: &Turn| t.message_id == "m1";
        let kept = select_history_with(&turns, budget, None, now, &shown);
        assert_eq!(
            kept.len(),
            1,
            "only the newest fits beside the image's cost"
        );
        let roomy = u32::try_from(3 * each + IMAGE_TOKENS).expect("small");
        assert_eq!(
            select_history_with(&turns, roomy, None, now, &shown).len(),
            3
        );
    }

    fn turn(i: usize, text: &str, at: DateTime<Utc>) -> Turn {
        Turn {
            inbound: i.is_multiple_of(2),
            text: text.into(),
            message_id: format!("m{i}"),
            at: Some(at),
            ai: !i.is_multiple_of(2),
            media: None,
        }
    }

    #[test]
    fn estimate_is_a_quarter_of_the_characters_plus_four() {
        assert_eq!(estimate_tokens(""), 4);
        assert_eq!(estimate_tokens("ok"), 5);
        assert_eq!(estimate_tokens("abcd"), 5);
        assert_eq!(estimate_tokens("abcde"), 6);
        // Characters, not bytes.
        assert_eq!(estimate_tokens("ääää"), 5);
    }

    #[test]
    fn keeps_the_newest_turns_that_fit_and_always_the_question() {
        let now = Utc::now();
        let turns: Vec<Turn> = (0..6).map(|i| turn(i, "abcdefgh", now)).collect(); // 6 each
        let kept = select_history(&turns, 20, None, now);
        assert_eq!(
            kept.iter()
                .map(|t| t.message_id.as_str())
                .collect::<Vec<_>>(),
            ["m3", "m4", "m5"]
        );
        assert_eq!(
            select_history(&turns, 0, None, now).len(),
            6,
            "0 = no budget"
        );
        let huge = vec![turn(0, &"x".repeat(1000), now)];
        assert_eq!(select_history(&huge, 10, None, now).len(), 1);
    }

    #[test]
    fn the_window_drops_older_turns() {
        let now = Utc::now();
        let turns = vec![
            turn(0, "old", now - Duration::hours(5)),
            turn(1, "recent", now - Duration::minutes(30)),
            turn(2, "now", now),
        ];
        let kept = select_history(&turns, 0, Some(std::time::Duration::from_secs(3600)), now);
        assert_eq!(
            kept.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
            ["recent", "now"]
        );
    }
}

#[cfg(test)]
mod tests {
    //! The reply path through real actors over in-memory ports: the transport's classified errors
    //! decide between retry, failure and send.

    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use wagate_events::chat::{Chat, ChatEvent, MessageKind};
    use wagate_events::message_window::MessageFact;

    use crate::chat::ChatMsg;
    use crate::ports::{
        ChatStreams, ConfigSource, Limits, Meta, Model, ModelAnswer, ModelCall, ModelFailure,
        Notify, Ports, ReplyConfig, SendError, Session, StoreFailure, Transport,
    };
    use crate::Gateway;

    /// Streams in memory; `refuse_sends` commits that carry a sent message fail as unavailable;
    /// the versions snapshots were offered at.
    #[derive(Default)]
    struct MemStreams(
        Mutex<HashMap<String, Vec<ChatEvent>>>,
        Mutex<usize>,
        Mutex<Vec<usize>>,
    );

    impl MemStreams {
        fn events(&self, stream: &str) -> Vec<ChatEvent> {
            self.0
                .lock()
                .map(|m| m.get(stream).cloned().unwrap_or_default())
                .unwrap_or_default()
        }
    }

    #[async_trait]
    impl ChatStreams for MemStreams {
        async fn load(&self, stream_id: &str) -> Result<(Chat, usize), StoreFailure> {
            let events = self.events(stream_id);
            let mut chat = Chat::default();
            for e in &events {
                cqrs_es::Aggregate::apply(&mut chat, e.clone());
            }
            Ok((chat, events.len()))
        }

        async fn recall(
            &self,
            stream_id: &str,
            message_id: &str,
        ) -> Result<Option<MessageFact>, StoreFailure> {
            Ok(wagate_events::chat::fact_of(
                message_id,
                &self.events(stream_id),
            ))
        }

        fn snapshot(&self, _: &str, version: usize, _: &Chat) {
            if let Ok(mut offered) = self.2.lock() {
                offered.push(version);
            }
        }

        async fn commit(
            &self,
            stream_id: &str,
            expected: usize,
            events: Vec<ChatEvent>,
            _: Meta,
            _: Option<i64>,
        ) -> Result<Vec<i64>, StoreFailure> {
            if events
                .iter()
                .any(|e| matches!(e, ChatEvent::MessageSent { .. }))
            {
                let mut refuse = self
                    .1
                    .lock()
                    .map_err(|_| StoreFailure::Other("poisoned".into()))?;
                if *refuse > 0 {
                    *refuse -= 1;
                    return Err(StoreFailure::Unavailable("connection reset".into()));
                }
            }
            let mut m = self
                .0
                .lock()
                .map_err(|_| StoreFailure::Other("poisoned".into()))?;
            let s = m.entry(stream_id.to_string()).or_default();
            if s.len() != expected {
                return Err(StoreFailure::Conflict);
            }
            let first = s.len();
            s.extend(events);
            Ok((first..s.len()).map(|p| p as i64 + 1).collect())
        }
    }

    struct Echo;

    impl ConfigSource for Echo {
        fn reply_config(
            &self,
            _: &str,
            _: &str,
        ) -> Result<ReplyConfig, wagate_events::reason::ReplyReason> {
            Ok(ReplyConfig {
                skip_reason: None,
                echo_mode: true,
                base_url: String::new(),
                private_networks: false,
                api_key: None,
                model: String::new(),
                system_prompt: String::new(),
                temperature: 0.0,
                max_tokens: 1,
                timeout: Duration::from_secs(1),
                reply_delay: Duration::ZERO,
                max_retries: 0,
                fallback: None,
                max_replies_per_hour: 0,
                daily_token_budget: 0,
                tokens_used_today: 0,
                max_history_tokens: 0,
                history_window: None,
                format_for_whatsapp: true,
                transcription_model: None,
                vision: false,
                handoff_tool: false,
                handoff_message: None,
                handoff_pause: chrono::Duration::zero(),
            })
        }
    }

    struct NoModel;

    #[async_trait]
    impl Model for NoModel {
        async fn complete(&self, _: ModelCall) -> Result<ModelAnswer, ModelFailure> {
            Err(ModelFailure {
                reason: "not called in echo mode".into(),
                class: wagate_events::reason::ModelErrorClass::Setup,
                status: None,
                attempts: vec![],
            })
        }
    }

    /// Answers sends from a script (then succeeds) and records typing targets.
    #[derive(Default)]
    struct Scripted {
        sends: Mutex<VecDeque<Result<String, SendError>>>,
        send_calls: Mutex<usize>,
        typing_on: Mutex<Vec<Option<String>>>,
        /// Accounts whose session was opened, and closed, in order.
        opened: Mutex<Vec<String>>,
        closed: Mutex<usize>,
    }

    /// Every account's session is the one scripted transport.
    #[async_trait]
    impl Transport for Arc<Scripted> {
        async fn open(&self, account: &str) -> Arc<dyn Session> {
            if let Ok(mut o) = self.opened.lock() {
                o.push(account.to_string());
            }
            self.clone()
        }
    }

    #[async_trait]
    impl Session for Scripted {
        async fn send_text(&self, _: &str, _: &str) -> Result<String, SendError> {
            if let Ok(mut n) = self.send_calls.lock() {
                *n += 1;
            }
            self.sends
                .lock()
                .ok()
                .and_then(|mut s| s.pop_front())
                .unwrap_or_else(|| Ok("wamid.OK".into()))
        }

        async fn typing(&self, _: &str, reply_to: Option<&str>) -> Result<(), SendError> {
            if let Ok(mut t) = self.typing_on.lock() {
                t.push(reply_to.map(str::to_string));
            }
            Err(SendError::permanent("typing not supported here"))
        }

        async fn close(&self) {
            if let Ok(mut n) = self.closed.lock() {
                *n += 1;
            }
        }
    }

    struct Quiet;

    #[async_trait]
    impl Notify for Quiet {
        async fn committed(&self) {}
    }

    async fn run(script: Vec<Result<String, SendError>>) -> (Vec<ChatEvent>, Arc<Scripted>) {
        run_with(script, 0, false).await
    }

    /// A customer text message into the test chat, committed.
    async fn receive(gateway: &Gateway, message_id: &str, text: &str) -> crate::chat::ReceiveAck {
        receive_in(gateway, "1@s.whatsapp.net", message_id, text).await
    }

    async fn receive_in(
        gateway: &Gateway,
        jid: &str,
        message_id: &str,
        text: &str,
    ) -> crate::chat::ReceiveAck {
        gateway
            .ask("acc", jid, |reply| ChatMsg::Receive {
                message_id: message_id.into(),
                from: "1".into(),
                text: text.into(),
                from_me: false,
                reply_candidate: true,
                mentioned: false,
                reply_to: None,
                kind: MessageKind::Text,
                contact_name: None,
                media: None,
                meta: Meta::new(),
                reply,
            })
            .await
            .expect("received")
    }

    /// A gateway over in-memory streams and the scripted transport, in echo mode.
    async fn start(
        streams: Arc<MemStreams>,
        transport: Arc<Scripted>,
        chat_idle: Duration,
    ) -> Arc<Gateway> {
        Gateway::start(Ports {
            streams,
            config: Arc::new(Echo),
            model: Arc::new(NoModel),
            transport: Arc::new(transport),
            ownership: Arc::new(crate::ports::SoleOwner),
            notify: Arc::new(Quiet),
            limits: Limits::new(4, 4),
            chat_idle,
            call_timeout: Duration::from_secs(5),
            send_attempts: 3,
            send_backoff: Duration::from_millis(10),
        })
        .await
        .expect("gateway")
    }

    /// Sends one customer message and waits for its reply to settle; `refuse_sends` commits of a
    /// sent message fail first, and with `newer_meanwhile` a second customer message arrives
    /// once they have.
    async fn run_with(
        script: Vec<Result<String, SendError>>,
        refuse_sends: usize,
        newer_meanwhile: bool,
    ) -> (Vec<ChatEvent>, Arc<Scripted>) {
        let streams = Arc::new(MemStreams(
            Mutex::default(),
            Mutex::new(refuse_sends),
            Mutex::default(),
        ));
        let transport = Arc::new(Scripted {
            sends: Mutex::new(script.into()),
            ..Default::default()
        });
        let gateway = start(streams.clone(), transport.clone(), Duration::from_secs(60)).await;
        receive(&gateway, "in1", "hello").await;
        if newer_meanwhile {
            for _ in 0..400 {
                if streams.1.lock().map(|n| *n == 0).unwrap_or(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            receive(&gateway, "in2", "are you there?").await;
        }
        let stream = "acc/1@s.whatsapp.net";
        for _ in 0..400 {
            let events = streams.events(stream);
            if events.iter().any(|e| {
                matches!(
                    e,
                    ChatEvent::AiReplySent { .. } | ChatEvent::AiReplyFailed { .. }
                )
            }) {
                gateway.shutdown().await;
                return (events, transport);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the reply did not settle: {:?}", streams.events(stream));
    }

    /// The account actor owns its account's session: opened once when it starts, used by every
    /// chat of the account, closed when the account stops.
    #[tokio::test]
    async fn an_account_actor_owns_one_session_for_all_its_chats() {
        let streams = Arc::new(MemStreams::default());
        let transport = Arc::new(Scripted::default());
        let gateway = start(streams, transport.clone(), Duration::from_secs(60)).await;
        receive_in(&gateway, "1@s.whatsapp.net", "a1", "hello").await;
        receive_in(&gateway, "2@s.whatsapp.net", "b1", "hello").await;
        for _ in 0..400 {
            if transport
                .send_calls
                .lock()
                .map(|n| *n == 2)
                .unwrap_or(false)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            *transport.send_calls.lock().expect("lock"),
            2,
            "both chats answered"
        );
        assert_eq!(*transport.opened.lock().expect("lock"), ["acc"]);
        assert_eq!(*transport.closed.lock().expect("lock"), 0);
        gateway.stop_account("acc").await;
        for _ in 0..400 {
            if transport.closed.lock().map(|n| *n == 1).unwrap_or(false) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            *transport.closed.lock().expect("lock"),
            1,
            "closed with the account"
        );
        gateway.shutdown().await;
    }

    #[tokio::test]
    async fn idle_chats_stop_and_start_again_on_the_next_message() {
        let streams = Arc::new(MemStreams::default());
        let transport = Arc::new(Scripted::default());
        let gateway = start(streams.clone(), transport, Duration::from_millis(100)).await;
        receive(&gateway, "in1", "hello").await;
        assert_eq!(gateway.counts().await.chats, 1);
        let mut chats = 1;
        for _ in 0..200 {
            chats = gateway.counts().await.chats;
            if chats == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(chats, 0, "the idle chat actor did not stop");
        // The next message starts the chat again from its stream: a repeated id is still known.
        receive(&gateway, "in1", "hello").await;
        let received = streams
            .events("acc/1@s.whatsapp.net")
            .iter()
            .filter(|e| matches!(e, ChatEvent::MessageReceived { .. }))
            .count();
        assert_eq!(received, 1);
        gateway.shutdown().await;
    }

    /// A chat longer than its in-memory id window: a redelivered old message is still a
    /// duplicate and a late status of an old sent message still counts (both recalled from the
    /// store), and a snapshot is offered when the stream passes a multiple of `SNAPSHOT_EVERY`.
    #[tokio::test]
    async fn a_long_chat_recalls_old_ids_and_offers_snapshots() {
        use crate::chat::SNAPSHOT_EVERY;
        use wagate_events::chat::{DeliveryStatus, Source};

        let streams = Arc::new(MemStreams::default());
        let stream = "acc/1@s.whatsapp.net";
        let at = chrono::Utc::now();
        let mut history = vec![ChatEvent::MessageSent {
            message_id: "out0".into(),
            text: "welcome".into(),
            source: Source::Operator,
            ai_reply_id: None,
            at,
        }];
        history.extend(
            (1..2 * SNAPSHOT_EVERY - 2).map(|i| ChatEvent::MessageReceived {
                message_id: format!("m{i}"),
                from: "1".into(),
                text: "hi".into(),
                from_me: false,
                at,
                kind: MessageKind::Text,
                contact_name: None,
                media: None,
            }),
        );
        streams
            .commit(stream, 0, history, Meta::new(), None)
            .await
            .expect("history");
        let gateway = start(
            streams.clone(),
            Arc::new(Scripted::default()),
            Duration::from_secs(60),
        )
        .await;
        let old = receive(&gateway, "m1", "hi").await;
        assert!(old.duplicate, "{old:?}");
        let status = |status| {
            let gateway = gateway.clone();
            async move {
                gateway
                    .ask("acc", "1@s.whatsapp.net", |reply| ChatMsg::Status {
                        message_id: "out0".into(),
                        status,
                        error: None,
                        meta: Meta::new(),
                        reply,
                    })
                    .await
                    .expect("answered")
            }
        };
        assert!(status(DeliveryStatus::Read).await, "a late status counts");
        assert!(
            !status(DeliveryStatus::Delivered).await,
            "and never goes back"
        );
        assert_eq!(streams.events(stream).len(), 2 * SNAPSHOT_EVERY - 1);
        assert!(streams.2.lock().map(|o| o.is_empty()).unwrap_or(false));
        receive(&gateway, "fresh", "a new question").await;
        let offered = streams.2.lock().map(|o| o.clone()).unwrap_or_default();
        assert_eq!(
            offered.first(),
            Some(&(2 * SNAPSHOT_EVERY + 1)),
            "{offered:?}"
        );
        gateway.shutdown().await;
    }

    fn calls(t: &Scripted) -> usize {
        t.send_calls.lock().map(|n| *n).unwrap_or(0)
    }

    #[tokio::test]
    async fn retryable_send_errors_are_retried_then_sent() {
        let (events, t) = run(vec![Err(SendError::retryable("rate limited"))]).await;
        assert_eq!(calls(&t), 2);
        assert!(events.iter().any(|e| matches!(e,
            ChatEvent::AiReplySent { message_id, .. } if message_id == "wamid.OK")));
        // Typing failed (best effort) and was aimed at the inbound message; nothing recorded.
        assert_eq!(
            t.typing_on.lock().map(|v| v.clone()).unwrap_or_default(),
            vec![Some("in1".to_string())]
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, ChatEvent::TypingIndicated { .. })));
    }

    #[tokio::test]
    async fn lasting_retryable_errors_fail_after_the_last_attempt() {
        let busy = || Err(SendError::retryable("rate limited"));
        let (events, t) = run(vec![busy(), busy(), busy()]).await;
        assert_eq!(calls(&t), 3);
        assert!(events.iter().any(|e| matches!(e,
            ChatEvent::AiReplyFailed { reason, .. } if reason.code() == "send_failed" && reason.text() == "send failed after 3 attempts: rate limited")));
    }

    #[tokio::test]
    async fn permanent_send_errors_fail_at_once() {
        let (events, t) = run(vec![Err(SendError::permanent("outside the window"))]).await;
        assert_eq!(calls(&t), 1);
        assert!(events.iter().any(|e| matches!(e,
            ChatEvent::AiReplyFailed { reason, .. } if reason.code() == "send_failed" && reason.text() == "send failed: outside the window")));
    }

    #[tokio::test]
    async fn a_sent_reply_whose_commit_failed_is_recorded_not_sent_again() {
        // The transport took the reply, then the store refused its events twice.
        let (events, t) = run_with(vec![], 2, false).await;
        assert_eq!(calls(&t), 1, "the customer must get the reply once");
        let sent: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, ChatEvent::MessageSent { .. }))
            .collect();
        assert_eq!(sent.len(), 1);
        assert!(events
            .iter()
            .any(|e| matches!(e, ChatEvent::AiReplySent { .. })));
        // Generated and sent were committed together (no reply delay, no debounce).
        let generated = events
            .iter()
            .position(|e| matches!(e, ChatEvent::AiReplyGenerated { .. }));
        assert!(generated.is_some());
    }

    #[tokio::test]
    async fn a_sent_reply_stays_sent_when_a_newer_message_arrives_before_it_is_recorded() {
        let (events, t) = run_with(vec![], 1, true).await;
        let first = events
            .iter()
            .find_map(|e| match e {
                ChatEvent::AiReplyRequested {
                    reply_id,
                    trigger_message_id,
                    ..
                } if trigger_message_id == "in1" => Some(reply_id.clone()),
                _ => None,
            })
            .expect("the first reply was requested");
        // The first reply went out once and is recorded as sent (after the newer message), not
        // as superseded.
        let sent_first = events.iter().position(
            |e| matches!(e, ChatEvent::AiReplySent { reply_id, .. } if *reply_id == first),
        );
        let second_in = events.iter().position(
            |e| matches!(e, ChatEvent::MessageReceived { message_id, .. } if message_id == "in2"),
        );
        assert!(sent_first.is_some() && second_in.is_some(), "{events:?}");
        assert!(
            second_in < sent_first,
            "the newer message committed first: {events:?}"
        );
        let sent_of_first = events
            .iter()
            .filter(
                |e| matches!(e, ChatEvent::MessageSent { ai_reply_id: Some(r), .. } if *r == first),
            )
            .count();
        assert_eq!(sent_of_first, 1, "{events:?}");
        // At most the first reply and the newer message's own reply went out.
        assert!(calls(&t) <= 2);
        assert!(!events.iter().any(|e| matches!(e,
            ChatEvent::AiReplySkipped { reason, .. } if reason.code() == "superseded" && reason.text().contains("not sent"))));
    }
}
