//! A reply worker: one short-lived actor per reply. It re-evaluates the rules from the effective
//! config, builds the prompt (system prompt + the chat's last 20 turns), calls the model within the
//! concurrency limits, records the generated reply, waits `reply_delay_seconds`, shows typing, and
//! asks the chat to deliver. Every step is committed by the chat actor; the worker holds nothing
//! that a crash could lose except time.

use std::sync::Arc;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use wagate_events::chat::TokenUsage;

use crate::chat::{ChatMsg, Delivery, ReplyContext};
use crate::ports::{ActorError, ModelCall, Ports, PromptRole};

pub struct ReplyWorker;

pub struct WorkerArgs {
    pub account: String,
    pub jid: String,
    pub reply_id: String,
    pub chat: ActorRef<ChatMsg>,
    pub ports: Arc<Ports>,
}

pub enum WorkerMsg {
    Run,
}

async fn ask<T: Send + 'static>(
    args: &WorkerArgs,
    build: impl FnOnce(RpcReplyPort<T>) -> ChatMsg,
) -> Result<T, String> {
    match args.chat.call(build, Some(args.ports.call_timeout)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err("chat actor did not answer in time".into()),
        Ok(CallResult::SenderError) | Err(_) => Err("chat actor is gone".into()),
    }
}

/// Asks the chat to commit one step, retrying while the store is only temporarily unavailable
/// (pool exhausted under load), so a busy store delays a reply instead of dropping it.
async fn step<T: Send + 'static>(
    args: &WorkerArgs,
    build: impl Fn(RpcReplyPort<Result<T, ActorError>>) -> ChatMsg,
) -> Result<T, String> {
    const ATTEMPTS: u32 = 8;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ask(args, &build).await? {
            Ok(v) => return Ok(v),
            Err(ActorError::Unavailable(m)) if attempt < ATTEMPTS => {
                tracing::debug!(reply_id = %args.reply_id, attempt, cause = %m, "store busy; retrying step");
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(attempt)))
                    .await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Builds the prompt: the system prompt, then the turns oldest first.
pub fn prompt(system: &str, ctx: &ReplyContext) -> Vec<(PromptRole, String)> {
    let mut messages = vec![(PromptRole::System, system.to_string())];
    messages.extend(ctx.history.iter().map(|t| {
        let role = if t.inbound {
            PromptRole::User
        } else {
            PromptRole::Assistant
        };
        (role, t.text.clone())
    }));
    messages
}

async fn run(args: &WorkerArgs) -> Result<(), String> {
    let reply_id = args.reply_id.clone();
    let skip = |reason: String| {
        let reply_id = reply_id.clone();
        move |reply| ChatMsg::Skip {
            reply_id: reply_id.clone(),
            reason: reason.clone(),
            reply,
        }
    };
    let cfg = match args.ports.config.reply_config(&args.account, &args.jid) {
        Ok(cfg) => cfg,
        Err(reason) => return step(args, skip(reason)).await,
    };
    if let Some(reason) = cfg.skip_reason.clone() {
        return step(args, skip(reason)).await;
    }
    let Some(ctx) = ask(args, |reply| ChatMsg::Context {
        reply_id: reply_id.clone(),
        reply,
    })
    .await?
    else {
        return Ok(()); // closed meanwhile
    };
    if let Err(reason) = ctx.loop_guard.clone() {
        return step(args, skip(reason)).await;
    }
    let (text, model, usage, latency_ms) = if cfg.echo_mode {
        (
            ctx.trigger_text.clone(),
            "echo".to_string(),
            TokenUsage::default(),
            0,
        )
    } else {
        let call = ModelCall {
            base_url: cfg.base_url.clone(),
            api_key: cfg.api_key.clone(),
            model: cfg.model.clone(),
            messages: prompt(&cfg.system_prompt, &ctx),
            temperature: cfg.temperature,
            max_tokens: cfg.max_tokens,
            timeout: cfg.timeout,
        };
        let permits = args.ports.limits.acquire(&args.account).await;
        let answer = args.ports.model.complete(call).await;
        drop(permits);
        match answer {
            Ok(a) => (a.text, a.model, a.usage, a.latency_ms),
            Err(reason) => {
                let reply_id = reply_id.clone();
                return step(args, move |reply| ChatMsg::Fail {
                    reply_id: reply_id.clone(),
                    reason: reason.clone(),
                    reply,
                })
                .await;
            }
        }
    };
    step(args, |reply| ChatMsg::Generated {
        reply_id: reply_id.clone(),
        text: text.clone(),
        model: model.clone(),
        usage,
        latency_ms,
        reply,
    })
    .await?;
    tokio::time::sleep(cfg.reply_delay).await;
    step(args, |reply| ChatMsg::Typing {
        reply_id: reply_id.clone(),
        reply,
    })
    .await?;
    deliver(args).await
}

/// Asks the chat to send the reply; when the transport says "retry later" (rate limits), waits
/// `send_backoff`, doubling, and tries again up to `send_attempts` times, then records the
/// failure with the last reason.
async fn deliver(args: &WorkerArgs) -> Result<(), String> {
    let attempts = args.ports.send_attempts.max(1);
    let mut delay = args.ports.send_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = step(args, |reply| ChatMsg::Deliver {
            reply_id: args.reply_id.clone(),
            reply,
        })
        .await?;
        match outcome {
            Delivery::Done => return Ok(()),
            Delivery::Retry { reason } if attempt < attempts => {
                tracing::info!(reply_id = %args.reply_id, attempt, reason = %reason, "send refused for now; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            Delivery::Retry { reason } => {
                let reason = format!("send failed after {attempt} attempts: {reason}");
                return step(args, |reply| ChatMsg::Fail {
                    reply_id: args.reply_id.clone(),
                    reason: reason.clone(),
                    reply,
                })
                .await;
            }
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
        if let Err(e) = run(args).await {
            tracing::warn!(reply_id = %args.reply_id, error = %e, "reply did not complete");
        }
        let _ = args.chat.cast(ChatMsg::WorkerDone {
            reply_id: args.reply_id.clone(),
        });
        myself.stop(None);
        Ok(())
    }
}
