//! The chat actor: one per active chat. It loads the chat stream once, keeps the state (last 20
//! turns, open replies, seen message ids) in memory, and commits every new event at the version it
//! holds, reloading only on a conflict. It is the single writer of its chat inside the process, so
//! inbound messages, operator sends and reply steps are serialized per chat, while chats run in
//! parallel. Replies are worked one at a time per chat, newest request first: older pending
//! requests are skipped as superseded, so the chat never gets an answer to a stale question.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chrono::DateTime;
use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use wagate_events::chat::{
    self, Chat, ChatCommand, ChatEvent, DeliveryStatus, MessageKind, ModelAttempt, Source,
    TokenUsage, Turn,
};

use wagate_events::reason::{ReplyReason, SupersededAt};

use crate::ports::{ActorError, Meta, Ports, StoreFailure};
use crate::supervisor::SupervisorMsg;

/// A chat's state is offered as a snapshot each time its stream passes a multiple of this many
/// events, so activating a chat folds at most about this many events after its snapshot.
pub const SNAPSHOT_EVERY: usize = 512;

#[derive(Debug, Clone, PartialEq)]
pub struct ReceiveAck {
    pub message_id: String,
    /// The position of the committed message event; `None` for a duplicate.
    pub position: Option<i64>,
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SentAck {
    pub message_id: String,
    pub position: Option<i64>,
}

/// The outcome of a delivery step that did not fail for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Sent (or skipped, or failed permanently): the reply reached a terminal event.
    Done,
    /// The transport asked to retry later (rate limit, outage); nothing was committed.
    Retry { reason: String },
}

/// A model's answer to a reply, as the worker hands it to the chat.
#[derive(Debug, Clone)]
pub struct GeneratedReply {
    pub text: String,
    pub model: String,
    pub usage: TokenUsage,
    pub latency_ms: u64,
    pub attempts: Vec<ModelAttempt>,
    pub fallback: bool,
}

impl GeneratedReply {
    fn record(self, reply_id: String) -> ChatCommand {
        ChatCommand::RecordGenerated {
            reply_id,
            text: self.text,
            model: self.model,
            usage: self.usage,
            latency_ms: self.latency_ms,
            attempts: self.attempts,
            fallback: self.fallback,
        }
    }
}

/// What a worker needs to build its prompt.
#[derive(Debug, Clone)]
pub struct ReplyContext {
    pub trigger_text: String,
    pub history: Vec<Turn>,
    pub loop_guard: Result<(), ReplyReason>,
    /// A newer customer message arrived after the trigger.
    pub superseded: bool,
    /// Burst debounce: do not work on the reply before this time.
    pub not_before: Option<DateTime<Utc>>,
    /// Why not to answer now because a human took over, if so.
    pub paused: Option<ReplyReason>,
    /// AI replies sent in this chat in the last hour.
    pub replies_last_hour: usize,
}

pub enum ChatMsg {
    Receive {
        message_id: String,
        from: String,
        text: String,
        from_me: bool,
        reply_candidate: bool,
        kind: MessageKind,
        contact_name: Option<String>,
        meta: Meta,
        reply: RpcReplyPort<Result<ReceiveAck, ActorError>>,
    },
    /// A delivery status of an outbound message; answers whether an event was recorded.
    Status {
        message_id: String,
        status: DeliveryStatus,
        error: Option<String>,
        meta: Meta,
        reply: RpcReplyPort<Result<bool, ActorError>>,
    },
    Send {
        text: String,
        source: Source,
        meta: Meta,
        reply: RpcReplyPort<Result<SentAck, ActorError>>,
    },
    Context {
        reply_id: String,
        reply: RpcReplyPort<Option<ReplyContext>>,
    },
    /// Records the model's answer (`AiReplyGenerated`).
    Generated {
        reply_id: String,
        generated: Box<GeneratedReply>,
        reply: RpcReplyPort<Result<(), ActorError>>,
    },
    /// Sends the reply (unless the chat decides otherwise), showing the typing indicator first
    /// when `typing`; the shown indicator and the sent message commit in one append. With
    /// `generated`, the model's answer is recorded in that same append (no reply delay and no
    /// debounce window: nothing happens between the two steps, see `ReplyWorker`).
    Deliver {
        reply_id: String,
        typing: bool,
        generated: Option<Box<GeneratedReply>>,
        reply: RpcReplyPort<Result<Delivery, ActorError>>,
    },
    Skip {
        reply_id: String,
        reason: ReplyReason,
        reply: RpcReplyPort<Result<(), ActorError>>,
    },
    Fail {
        reply_id: String,
        reason: ReplyReason,
        attempts: Vec<ModelAttempt>,
        reply: RpcReplyPort<Result<(), ActorError>>,
    },
    /// Ends a human-takeover pause now; answers whether one was running.
    Resume {
        meta: Meta,
        reply: RpcReplyPort<Result<bool, ActorError>>,
    },
    WorkerDone {
        reply_id: String,
    },
    CloseInterrupted {
        reply: RpcReplyPort<Result<usize, ActorError>>,
    },
    IdleCheck,
}

pub struct ChatActor;

pub struct ChatArgs {
    pub account: String,
    pub jid: String,
    pub ports: Arc<Ports>,
    pub supervisor: ActorRef<SupervisorMsg>,
}

pub struct ChatState {
    account: String,
    jid: String,
    stream_id: String,
    ports: Arc<Ports>,
    supervisor: ActorRef<SupervisorMsg>,
    chat: Chat,
    version: usize,
    /// Reply ids waiting for a worker, oldest first.
    queue: VecDeque<String>,
    active: Option<String>,
    last_activity: Instant,
    /// Replies the transport sent whose events could not be committed yet (store unavailable),
    /// with those events: a retried delivery commits them instead of sending again.
    unrecorded: HashMap<String, Vec<ChatEvent>>,
}

fn system_meta(actor: &str) -> Meta {
    let mut m = Meta::new();
    m.insert(wagate_events::metadata::ACTOR.into(), actor.into());
    m.insert(
        wagate_events::metadata::TIME.into(),
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    m
}

impl ChatState {
    /// Decides `command` on the in-memory state and commits the events at the held version;
    /// on a conflict reloads the stream and decides again (at most 3 times).
    async fn commit(
        &mut self,
        command: ChatCommand,
        meta: &Meta,
    ) -> Result<(Vec<ChatEvent>, Vec<i64>), ActorError> {
        self.commit_all(vec![command], meta).await
    }

    /// Decides the commands in order (each sees the events of the ones before) and commits all
    /// their events in one append.
    async fn commit_all(
        &mut self,
        commands: Vec<ChatCommand>,
        meta: &Meta,
    ) -> Result<(Vec<ChatEvent>, Vec<i64>), ActorError> {
        for _ in 0..3 {
            self.recall_ids(&commands).await?;
            let (events, after) = match commands.as_slice() {
                [one] => (self.chat.decide(one.clone())?, None),
                many => {
                    let (events, after) = decide_all(self.chat.clone(), many)?;
                    (events, Some(after))
                }
            };
            if events.is_empty() {
                return Ok((vec![], vec![]));
            }
            match self
                .ports
                .streams
                .commit(&self.stream_id, self.version, events.clone(), meta.clone())
                .await
            {
                Ok(positions) => {
                    self.committed(&events, after).await;
                    return Ok((events, positions));
                }
                Err(StoreFailure::Conflict) => {
                    let (chat, version) = self.ports.streams.load(&self.stream_id).await?;
                    self.chat = chat;
                    self.version = version;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreFailure::Conflict.into())
    }

    /// Before `commands` are decided: asks the store about every message id they name that fell
    /// out of the chat's in-memory window, so that a redelivered old message is still a duplicate
    /// and a late status of an old outbound message still counts.
    async fn recall_ids(&mut self, commands: &[ChatCommand]) -> Result<(), ActorError> {
        for c in commands {
            let id = match c {
                ChatCommand::Receive { message_id, .. }
                | ChatCommand::UpdateStatus { message_id, .. } => message_id,
                _ => continue,
            };
            if !self.chat.message_ids.needs_recall(id) {
                continue;
            }
            if let Some(fact) = self.ports.streams.recall(&self.stream_id, id).await? {
                self.chat.message_ids.remember(id.clone(), fact);
            }
        }
        Ok(())
    }

    /// Takes in events just committed: the state decided with them (`after`) or, without it, the
    /// events applied to the held state; moves the version, offers a snapshot every
    /// [`SNAPSHOT_EVERY`] events and wakes the read models.
    async fn committed(&mut self, events: &[ChatEvent], after: Option<Chat>) {
        match after {
            Some(chat) => self.chat = chat,
            None => {
                for e in events {
                    cqrs_apply(&mut self.chat, e.clone());
                }
            }
        }
        let before = self.version;
        self.version += events.len();
        if before / SNAPSHOT_EVERY != self.version / SNAPSHOT_EVERY {
            self.ports
                .streams
                .snapshot(&self.stream_id, self.version, &self.chat);
        }
        self.ports.notify.committed().await;
    }

    /// One delivery step: records `generated` first when given, decides (superseded? paused?
    /// loop guard?), and only if the decision is to send shows the typing indicator (when
    /// `typing`) and hands the text to the transport; everything decided commits in one append.
    /// A reply the transport already took is never handed to it again: if its commit failed, the
    /// next step commits the same events without sending.
    async fn deliver(
        &mut self,
        reply_id: String,
        typing: bool,
        generated: Option<GeneratedReply>,
    ) -> Result<Delivery, ActorError> {
        let auto = system_meta("system:auto-reply");
        if let Some(events) = self.unrecorded.remove(&reply_id) {
            return self.commit_sent(&reply_id, events, &auto).await;
        }
        let mut commands = Vec::with_capacity(3);
        // The state the send is decided on: after the generated answer, when it comes along
        // (with that answer's events, which open the append).
        let after_generated = match generated {
            Some(g) => {
                let cmd = g.record(reply_id.clone());
                let decided = decide_all(self.chat.clone(), std::slice::from_ref(&cmd))?;
                commands.push(cmd);
                Some(decided)
            }
            None => None,
        };
        let chat = after_generated
            .as_ref()
            .map_or(&self.chat, |(_, after)| after);
        let provisional = chat.decide(ChatCommand::SendReply {
            reply_id: reply_id.clone(),
            message_id: "provisional".into(),
            at: Utc::now(),
        })?;
        let text = match provisional.first() {
            Some(ChatEvent::MessageSent { text, .. }) => text.clone(),
            _ => {
                // Skipped: commit the decision as it is.
                commands.push(ChatCommand::SendReply {
                    reply_id,
                    message_id: "not-sent".into(),
                    at: Utc::now(),
                });
                return self
                    .commit_all(commands, &auto)
                    .await
                    .map(|_| Delivery::Done);
            }
        };
        // Typing is a courtesy: when it fails the send still runs (and reports the real
        // problem, if any); only a shown indicator is recorded, with the send.
        if typing {
            let trigger = chat.trigger_of(&reply_id).map(str::to_string);
            match self
                .ports
                .transport
                .typing(&self.account, &self.jid, trigger.as_deref())
                .await
            {
                Ok(()) => commands.push(ChatCommand::Typing {
                    reply_id: Some(reply_id.clone()),
                    at: Utc::now(),
                }),
                Err(e) => {
                    tracing::warn!(reply_id = %reply_id, reason = %e, "typing indicator not shown");
                }
            }
        }
        match self
            .ports
            .transport
            .send_text(&self.account, &self.jid, &text)
            .await
        {
            Ok(message_id) => {
                commands.push(ChatCommand::SendReply {
                    reply_id: reply_id.clone(),
                    message_id,
                    at: Utc::now(),
                });
                // Decided once, here, on the state the send was decided on: if the commit fails,
                // these very events are committed later (a newer message arriving meanwhile does
                // not turn a sent reply into a skipped one).
                let recorded = usize::from(after_generated.is_some());
                let (mut events, base) =
                    after_generated.unwrap_or_else(|| (Vec::new(), self.chat.clone()));
                let (sent, _) = decide_all(base, &commands[recorded..])?;
                events.extend(sent);
                self.commit_sent(&reply_id, events, &auto).await
            }
            Err(e) if e.retryable => {
                if !commands.is_empty() {
                    self.commit_all(commands, &auto).await?;
                }
                Ok(Delivery::Retry { reason: e.reason })
            }
            Err(e) => {
                commands.push(ChatCommand::FailReply {
                    reply_id,
                    reason: ReplyReason::SendFailed {
                        attempts: None,
                        detail: e.reason,
                    },
                    attempts: vec![],
                });
                self.commit_all(commands, &auto)
                    .await
                    .map(|_| Delivery::Done)
            }
        }
    }

    /// Appends a sent reply's events at the held version; on a conflict reloads and appends them
    /// again while the reply is still open (closed: an earlier attempt committed after all).
    async fn commit_sent(
        &mut self,
        reply_id: &str,
        events: Vec<ChatEvent>,
        meta: &Meta,
    ) -> Result<Delivery, ActorError> {
        let mut last = StoreFailure::Conflict;
        for _ in 0..3 {
            let commit = self
                .ports
                .streams
                .commit(&self.stream_id, self.version, events.clone(), meta.clone())
                .await;
            match commit {
                Ok(_) => {
                    self.committed(&events, None).await;
                    return Ok(Delivery::Done);
                }
                Err(StoreFailure::Conflict) => {
                    let reloaded = self.ports.streams.load(&self.stream_id).await;
                    match reloaded {
                        Ok((chat, version)) => {
                            self.chat = chat;
                            self.version = version;
                            if !self.chat.open_replies.contains_key(reply_id) {
                                return Ok(Delivery::Done);
                            }
                        }
                        Err(e) => {
                            last = e;
                            break;
                        }
                    }
                }
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        self.unrecorded.insert(reply_id.to_string(), events);
        Err(last.into())
    }

    /// Starts a worker for the newest waiting reply, skipping older ones.
    async fn pump(&mut self, myself: &ActorRef<ChatMsg>) {
        if self.active.is_some() {
            return;
        }
        while self.queue.len() > 1 {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            let cmd = ChatCommand::SkipReply {
                reply_id: old.clone(),
                reason: ReplyReason::Superseded {
                    at: SupersededAt::Queue,
                },
            };
            if let Err(e) = self.commit(cmd, &system_meta("system:auto-reply")).await {
                tracing::warn!(reply_id = %old, error = %e, "could not record a superseded reply");
            }
        }
        let Some(next) = self.queue.pop_front() else {
            return;
        };
        if !self.chat.open_replies.contains_key(&next) {
            return;
        }
        self.active = Some(next.clone());
        let start = SupervisorMsg::Start {
            account: self.account.clone(),
            jid: self.jid.clone(),
            reply_id: next.clone(),
            chat: myself.clone(),
        };
        if self.supervisor.cast(start).is_err() {
            self.active = None;
            let cmd = ChatCommand::FailReply {
                reply_id: next,
                reason: ReplyReason::SupervisorUnavailable,
                attempts: vec![],
            };
            let _ = self.commit(cmd, &system_meta("system:auto-reply")).await;
        }
    }
}

/// Applies an event with the aggregate's own fold.
fn cqrs_apply(chat: &mut Chat, e: ChatEvent) {
    cqrs_es::Aggregate::apply(chat, e);
}

/// Decides `commands` in order on `chat`, each seeing the events of the ones before: their
/// events, and the state after them.
fn decide_all(
    mut chat: Chat,
    commands: &[ChatCommand],
) -> Result<(Vec<ChatEvent>, Chat), wagate_events::DomainError> {
    let mut events = Vec::new();
    for c in commands {
        let decided = chat.decide(c.clone())?;
        for e in &decided {
            cqrs_apply(&mut chat, e.clone());
        }
        events.extend(decided);
    }
    Ok((events, chat))
}

impl Actor for ChatActor {
    type Msg = ChatMsg;
    type State = ChatState;
    type Arguments = ChatArgs;

    async fn pre_start(
        &self,
        _: ActorRef<ChatMsg>,
        args: ChatArgs,
    ) -> Result<ChatState, ActorProcessingErr> {
        // The stream is loaded in `post_start`: `spawn` returns after `pre_start`, and the
        // account actor that spawns chats must not wait on a database round trip per new chat.
        let stream_id = chat::stream_id(&args.account, &args.jid);
        Ok(ChatState {
            account: args.account,
            jid: args.jid,
            stream_id,
            ports: args.ports,
            supervisor: args.supervisor,
            chat: Chat::default(),
            version: 0,
            queue: VecDeque::new(),
            active: None,
            last_activity: Instant::now(),
            unrecorded: HashMap::new(),
        })
    }

    /// Loads the chat's stream before the first message is handled (ractor runs `post_start`
    /// before the message loop). A failure stops the actor: callers waiting on it see it stop and
    /// retry once, then answer "unavailable" (503), as when the store is down.
    async fn post_start(
        &self,
        _: ActorRef<ChatMsg>,
        st: &mut ChatState,
    ) -> Result<(), ActorProcessingErr> {
        let (chat, version) = st
            .ports
            .streams
            .start(&st.stream_id)
            .await
            .map_err(|e| format!("cannot load chat stream: {e}"))?;
        st.chat = chat;
        st.version = version;
        Ok(())
    }

    /// Boxed: ractor keeps an actor's message loop in one allocation sized for its largest state,
    /// and a chat spends most of its life waiting, not handling; inline, every running chat
    /// would hold this future's ~2.5 KB (the delivery path's locals) while idle.
    async fn handle(
        &self,
        myself: ActorRef<ChatMsg>,
        msg: ChatMsg,
        st: &mut ChatState,
    ) -> Result<(), ActorProcessingErr> {
        Box::pin(st.on_message(myself, msg)).await
    }
}

impl ChatState {
    async fn on_message(
        &mut self,
        myself: ActorRef<ChatMsg>,
        msg: ChatMsg,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(msg, ChatMsg::IdleCheck) {
            self.last_activity = Instant::now();
        }
        let auto = system_meta("system:auto-reply");
        match msg {
            ChatMsg::Receive {
                message_id,
                from,
                text,
                from_me,
                reply_candidate,
                kind,
                contact_name,
                meta,
                reply,
            } => {
                let reply_id = uuid::Uuid::now_v7().to_string();
                let control = self.ports.config.control(&self.account, &self.jid);
                let cmd = ChatCommand::Receive {
                    message_id: message_id.clone(),
                    from,
                    text,
                    from_me,
                    reply_candidate,
                    reply_id: reply_id.clone(),
                    at: Utc::now(),
                    kind,
                    contact_name,
                    control,
                };
                let result = self.commit(cmd, &meta).await.map(|(events, positions)| {
                    // A reply closed in the same commit (non-text message) needs no worker.
                    let requested = events
                        .iter()
                        .any(|e| matches!(e, ChatEvent::AiReplyRequested { .. }))
                        && self.chat.open_replies.contains_key(&reply_id);
                    (
                        requested,
                        ReceiveAck {
                            message_id,
                            duplicate: events.is_empty(),
                            position: positions.first().copied(),
                        },
                    )
                });
                match result {
                    Ok((requested, ack)) => {
                        let _ = reply.send(Ok(ack));
                        if requested {
                            self.queue.push_back(reply_id);
                            self.pump(&myself).await;
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            ChatMsg::Send {
                text,
                source,
                meta,
                reply,
            } => {
                let result = async {
                    // Validate before anything leaves the gateway.
                    self.chat.decide(ChatCommand::Send {
                        message_id: "validation".into(),
                        text: text.clone(),
                        source,
                        at: Utc::now(),
                        takeover: chrono::Duration::zero(),
                    })?;
                    let takeover = self.ports.config.control(&self.account, &self.jid).takeover;
                    let message_id = self
                        .ports
                        .transport
                        .send_text(&self.account, &self.jid, &text)
                        .await
                        .map_err(ActorError::Transport)?;
                    let cmd = ChatCommand::Send {
                        message_id: message_id.clone(),
                        text,
                        source,
                        at: Utc::now(),
                        takeover,
                    };
                    let (_, positions) = self.commit(cmd, &meta).await?;
                    Ok(SentAck {
                        message_id,
                        position: positions.first().copied(),
                    })
                }
                .await;
                let _ = reply.send(result);
            }
            ChatMsg::Status {
                message_id,
                status,
                error,
                meta,
                reply,
            } => {
                let cmd = ChatCommand::UpdateStatus {
                    message_id,
                    status,
                    error,
                    at: Utc::now(),
                };
                let result = self
                    .commit(cmd, &meta)
                    .await
                    .map(|(events, _)| !events.is_empty());
                let _ = reply.send(result);
            }
            ChatMsg::Context { reply_id, reply } => {
                let ctx = self.chat.trigger_of(&reply_id).map(|trigger| {
                    let trigger_text = self
                        .chat
                        .history
                        .iter()
                        .find(|t| t.message_id == trigger)
                        .map(|t| t.text.clone())
                        .unwrap_or_default();
                    let now = Utc::now();
                    ReplyContext {
                        trigger_text,
                        history: self.chat.history.iter().cloned().collect(),
                        loop_guard: self.chat.loop_guard(now),
                        superseded: self.chat.superseded(&reply_id),
                        not_before: self.chat.not_before_of(&reply_id),
                        paused: self.chat.pause_reason(now),
                        replies_last_hour: self.chat.ai_replies_last_hour(now),
                    }
                });
                let _ = reply.send(ctx);
            }
            ChatMsg::Generated {
                reply_id,
                generated,
                reply,
            } => {
                let cmd = generated.record(reply_id);
                let _ = reply.send(self.commit(cmd, &auto).await.map(drop));
            }
            ChatMsg::Deliver {
                reply_id,
                typing,
                generated,
                reply,
            } => {
                let result = self.deliver(reply_id, typing, generated.map(|g| *g)).await;
                let _ = reply.send(result);
            }
            ChatMsg::Skip {
                reply_id,
                reason,
                reply,
            } => {
                let cmd = ChatCommand::SkipReply { reply_id, reason };
                let _ = reply.send(self.commit(cmd, &auto).await.map(drop));
            }
            ChatMsg::Fail {
                reply_id,
                reason,
                attempts,
                reply,
            } => {
                let cmd = ChatCommand::FailReply {
                    reply_id,
                    reason,
                    attempts,
                };
                let _ = reply.send(self.commit(cmd, &auto).await.map(drop));
            }
            ChatMsg::Resume { meta, reply } => {
                let cmd = ChatCommand::Resume { at: Utc::now() };
                let result = self
                    .commit(cmd, &meta)
                    .await
                    .map(|(events, _)| !events.is_empty());
                let _ = reply.send(result);
            }
            ChatMsg::WorkerDone { reply_id } => {
                if self.active.as_deref() == Some(reply_id.as_str()) {
                    self.active = None;
                }
                // A reply the transport took but whose events are not committed yet: commit
                // them now (never send again). If the store still refuses, the reply stays open
                // (not failed: the customer has it) and start-up recovery closes it.
                let mut unrecorded = false;
                if let Some(events) = self.unrecorded.remove(&reply_id) {
                    if let Err(e) = self.commit_sent(&reply_id, events, &auto).await {
                        tracing::error!(reply_id = %reply_id, error = %e, "a sent reply could not be recorded; it stays open and is closed as interrupted at the next start");
                        self.unrecorded.remove(&reply_id);
                        unrecorded = true;
                    }
                }
                // A worker that ended without a terminal event leaves its reply open.
                if !unrecorded
                    && self.chat.open_replies.contains_key(&reply_id)
                    && !self.queue.contains(&reply_id)
                {
                    let cmd = ChatCommand::FailReply {
                        reply_id: reply_id.clone(),
                        reason: ReplyReason::WorkerStopped,
                        attempts: vec![],
                    };
                    if let Err(e) = self.commit(cmd, &auto).await {
                        tracing::warn!(reply_id = %reply_id, error = %e, "could not close a reply");
                    }
                }
                self.pump(&myself).await;
            }
            ChatMsg::CloseInterrupted { reply } => {
                let result = self
                    .commit(
                        ChatCommand::CloseInterrupted,
                        &system_meta("system:recovery"),
                    )
                    .await
                    .map(|(events, _)| events.len());
                // What recovery left open is a debounced request that never got an answer:
                // work on it again (it waits out the rest of its window).
                let resumed: Vec<String> = self
                    .chat
                    .open_replies
                    .keys()
                    .filter(|r| {
                        !self.queue.contains(r) && self.active.as_deref() != Some(r.as_str())
                    })
                    .cloned()
                    .collect();
                if !resumed.is_empty() {
                    tracing::info!(
                        replies = resumed.len(),
                        "resuming debounced replies after a restart"
                    );
                    self.queue.extend(resumed);
                }
                let _ = reply.send(result);
                self.pump(&myself).await;
            }
            ChatMsg::IdleCheck => {
                let idle = self.last_activity.elapsed() >= self.ports.chat_idle;
                if self.active.is_none() && self.queue.is_empty() && idle {
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }
}
