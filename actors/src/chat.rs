//! The chat actor: one per active chat. It loads the chat stream once, keeps the state (last 20
//! turns, open replies, seen message ids) in memory, and commits every new event at the version it
//! holds, reloading only on a conflict. It is the single writer of its chat inside the process, so
//! inbound messages, operator sends and reply steps are serialized per chat, while chats run in
//! parallel. Replies are worked one at a time per chat, newest request first: older pending
//! requests are skipped as superseded, so the chat never gets an answer to a stale question.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chrono::DateTime;
use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use wagate_events::chat::{
    self, Chat, ChatCommand, ChatEvent, DeliveryStatus, MessageKind, ModelAttempt, Source,
    TokenUsage, Turn,
};

use wagate_events::chat::SentPart;
use wagate_events::reason::{ReplyReason, SupersededAt};

use crate::account::AccountHandle;
use crate::ports::{ActorError, Meta, Owner, Ports, SendError, StoreFailure};
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
    /// The model called the handoff tool: the chat is paused this long, and `text` (the handoff
    /// message or the model's words, maybe empty) is sent as a notice.
    pub handoff: Option<chrono::Duration>,
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
            handoff: self.handoff.map(|pause| (pause, Utc::now())),
        }
    }
}

/// The chat's answer to [`ChatMsg::Reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Nothing to send: the reply was closed (not sent, for the reason recorded) or its send was
    /// recorded already.
    Done,
    /// Send `parts` now, in order (one unless `max_message_chars` split the reply), the first
    /// after the typing indicator when `typing` (shown on `trigger`, the message being answered),
    /// each further one after its own.
    Send {
        parts: Vec<String>,
        typing: bool,
        trigger: Option<String>,
    },
}

/// What the worker's transport calls did with a reserved send.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    /// The parts the transport took, in order.
    pub sent: Vec<SentPart>,
    /// Why the next part was not sent (`None`: every part was).
    pub failed: Option<SendError>,
    /// When the typing indicator of a first part that was not sent showed.
    pub typed_at: Option<DateTime<Utc>>,
}

/// A delivery status of an outbound message.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub message_id: String,
    pub status: DeliveryStatus,
    pub error: Option<String>,
}

/// A status of a message id the chat did not know while a send was in flight: the transport may
/// report a message before the send that made it is recorded. Decided when no send is in flight.
struct Parked {
    update: StatusUpdate,
    meta: Meta,
    reply: RpcReplyPort<Result<bool, ActorError>>,
}

/// At most this many statuses wait for sends in flight; more are decided at once.
const MAX_PARKED: usize = 1024;

/// What a worker needs to build its prompt.
#[derive(Debug, Clone)]
pub struct ReplyContext {
    pub trigger_text: String,
    /// The message the reply answers.
    pub trigger_message_id: String,
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
    /// The reply's text is recorded — a notice (handoff or away message), or an answer generated
    /// before a restart: it is delivered as it is, without the model.
    pub generated: bool,
}

pub enum ChatMsg {
    Receive {
        message_id: String,
        from: String,
        text: String,
        from_me: bool,
        reply_candidate: bool,
        mentioned: bool,
        reply_to: Option<String>,
        kind: MessageKind,
        contact_name: Option<String>,
        media: Option<wagate_events::chat::MediaInfo>,
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
    /// Validates a message an operator (or a test reply) sends and opens a ticket for it; the
    /// caller's task calls the transport and answers with `RecordSend`.
    ReserveSend {
        text: String,
        source: Source,
        reply: RpcReplyPort<Result<(u64, Arc<AccountHandle>), ActorError>>,
    },
    /// What the transport did with a message of a ticket; records it when sent.
    RecordSend {
        ticket: u64,
        text: String,
        source: Source,
        result: Result<String, SendError>,
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
    /// Decides whether the reply is sent now (recording `generated` first when given) and, if
    /// so, reserves the send for the worker, which calls the transport and answers with `Record`.
    Reserve {
        reply_id: String,
        typing: bool,
        generated: Option<Box<GeneratedReply>>,
        reply: RpcReplyPort<Result<Reservation, ActorError>>,
    },
    /// What became of a reserved send.
    Record {
        reply_id: String,
        outcome: SendOutcome,
        reply: RpcReplyPort<Result<Delivery, ActorError>>,
    },
    Skip {
        reply_id: String,
        reason: ReplyReason,
        reply: RpcReplyPort<Result<(), ActorError>>,
    },
    /// Records the transcript of an audio message (a reply worker transcribed it).
    Transcribed {
        message_id: String,
        text: String,
        model: String,
        latency_ms: u64,
        usage: Option<wagate_events::chat::TokenUsage>,
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
    /// `CloseInterrupted` unless this chat already works on every one of `reply_ids` (the
    /// owner's sweep for replies whose hand-over was lost: no store read when nothing is).
    Adopt {
        reply_ids: Vec<String>,
        reply: RpcReplyPort<Result<usize, ActorError>>,
    },
    IdleCheck,
}

pub struct ChatActor;

pub struct ChatArgs {
    /// The account's handle, lent by its account actor.
    pub account: Arc<AccountHandle>,
    pub jid: String,
    pub ports: Arc<Ports>,
    pub supervisor: ActorRef<SupervisorMsg>,
}

pub struct ChatState {
    account: Arc<AccountHandle>,
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
    /// with the commands that record them: a retried step commits them instead of sending again.
    unrecorded: HashMap<String, Vec<ChatCommand>>,
    /// Replies whose send is reserved (a worker is calling the transport), with the model's
    /// answer when it is to be recorded with the outcome (a session that reaches no customer: the
    /// answer was not committed with a sending mark).
    reserved: HashMap<String, Option<ChatCommand>>,
    /// Operator and test sends between their validation and their outcome.
    tickets: HashSet<u64>,
    next_ticket: u64,
    parked: Vec<Parked>,
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
        let fence = self.fence_for(&commands)?;
        // Another gateway runs this account and commits to the stream: what this actor holds is
        // likely behind, and a commit on it would only conflict (and split the group commit's
        // batch). Read the stream first.
        if self.ports.ownership.owner(&self.account.account) == Owner::Elsewhere {
            self.reload().await?;
        }
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
                .commit(
                    &self.stream_id,
                    self.version,
                    events.clone(),
                    meta.clone(),
                    fence,
                )
                .await
            {
                Ok(positions) => {
                    self.committed(&events, after).await;
                    return Ok((events, positions));
                }
                Err(StoreFailure::Conflict) => self.reload().await?,
                Err(StoreFailure::Fenced) => {
                    // Another gateway runs the account now: leave its replies to it.
                    self.queue.clear();
                    tracing::warn!(account = %self.account.account, "a reply step was refused: the account's lease moved to another gateway");
                    return Err(StoreFailure::Fenced.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreFailure::Conflict.into())
    }

    /// Reads the stream again from the store.
    async fn reload(&mut self) -> Result<(), StoreFailure> {
        let (chat, version) = self.ports.streams.load(&self.stream_id).await?;
        self.chat = chat;
        self.version = version;
        Ok(())
    }

    /// The lease epoch `commands` are committed under: a reply step (anything but recording a
    /// message, a status or a resume) is fenced by the account's lease, and refused outright in a
    /// process that does not run the account (ADR 0026).
    fn fence_for(&self, commands: &[ChatCommand]) -> Result<Option<i64>, StoreFailure> {
        let reply_step = commands.iter().any(|c| {
            !matches!(
                c,
                ChatCommand::Receive { .. }
                    | ChatCommand::Send { .. }
                    | ChatCommand::UpdateStatus { .. }
                    | ChatCommand::Resume { .. }
            )
        });
        match (
            reply_step,
            self.ports.ownership.owner(&self.account.account),
        ) {
            (false, _) => Ok(None),
            (true, Owner::Here { epoch }) => Ok(epoch),
            (true, Owner::Elsewhere) => Err(StoreFailure::Fenced),
        }
    }

    /// Recovers the chat's open replies that no worker here has: reloads the stream (another
    /// gateway may have committed to it), closes the ones that may have been handed to the
    /// transport (`interrupted`) or are superseded, works on the others; how many it closed.
    /// Nothing in a process that does not run the account.
    async fn recover(&mut self, myself: &ActorRef<ChatMsg>) -> Result<usize, ActorError> {
        if self.ports.ownership.owner(&self.account.account) == Owner::Elsewhere {
            return Ok(0);
        }
        let keep: Vec<String> = self
            .reserved
            .keys()
            .chain(self.unrecorded.keys())
            .chain(self.active.iter())
            .cloned()
            .collect();
        self.reload().await?;
        let closed = self
            .commit(
                ChatCommand::CloseInterrupted { keep },
                &system_meta("system:recovery"),
            )
            .await
            .map(|(events, _)| events.len())?;
        // What recovery left open never reached the transport: work on it again (a request is
        // asked of the model, waiting out the rest of a debounce window; an answer is delivered).
        let resumed = self.queue_open_replies();
        if resumed > 0 {
            tracing::info!(
                replies = resumed,
                "resuming replies left open before they were sent"
            );
        }
        self.pump(myself).await;
        Ok(closed)
    }

    /// Queues every open reply that no worker here has and that was not handed to the
    /// transport; how many.
    fn queue_open_replies(&mut self) -> usize {
        let open: Vec<String> = self
            .chat
            .open_replies
            .keys()
            .filter(|r| {
                !self.queue.contains(r)
                    && self.active.as_deref() != Some(r.as_str())
                    && !self.reserved.contains_key(*r)
                    && !self.chat.is_sending(r)
            })
            .cloned()
            .collect();
        let n = open.len();
        self.queue.extend(open);
        n
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

    /// Decides whether a reply is sent now, recording `generated` first when given. "Not sent"
    /// (superseded, paused, loop guard) is committed at once; "send" reserves the send and hands
    /// the text to the worker, which calls the transport outside this actor and reports with
    /// [`ChatMsg::Record`]. The chat keeps taking messages meanwhile.
    async fn reserve(
        &mut self,
        reply_id: String,
        typing: bool,
        generated: Option<GeneratedReply>,
    ) -> Result<Reservation, ActorError> {
        let auto = system_meta("system:auto-reply");
        if let Some(commands) = self.unrecorded.remove(&reply_id) {
            return self
                .commit_sent(&reply_id, commands, &auto)
                .await
                .map(|_| Reservation::Done);
        }
        if !self.chat.open_replies.contains_key(&reply_id) {
            return Ok(Reservation::Done); // closed meanwhile (recorded so)
        }
        let generated = generated.map(|g| g.record(reply_id.clone()));
        // The state the send is decided on: after the generated answer, when it comes along.
        let after_generated = match &generated {
            Some(cmd) => Some(decide_all(self.chat.clone(), std::slice::from_ref(cmd))?.1),
            None => None,
        };
        // The answer closed the reply itself (the model's handoff without a text to send).
        if let (Some(after), Some(cmd)) = (&after_generated, &generated) {
            if !after.open_replies.contains_key(&reply_id) {
                return self
                    .commit_all(vec![cmd.clone()], &auto)
                    .await
                    .map(|_| Reservation::Done);
            }
        }
        let chat = after_generated.as_ref().unwrap_or(&self.chat);
        let control = self.ports.config.control(&self.account.account, &self.jid);
        let loop_guard = control.loop_guard;
        // One time for both decisions below, so "not sent" is committed exactly as decided.
        let at = Utc::now();
        let provisional = chat.decide(ChatCommand::SendReply {
            reply_id: reply_id.clone(),
            message_id: "provisional".into(),
            at,
            loop_guard,
        })?;
        if let Some(ChatEvent::MessageSent { text, .. }) = provisional.into_iter().next() {
            let trigger = chat.trigger_of(&reply_id).map(str::to_string);
            // Durable before the transport is called: the answer (when it came along) and the
            // sending mark, so a crash from here on never hands this reply over again, and a
            // crash before it works the reply again (ADR 0025). A session that reaches no
            // customer needs no mark: the answer is recorded with the outcome.
            if self.account.session.reaches_customers() {
                let mut commands: Vec<ChatCommand> = generated.into_iter().collect();
                commands.push(ChatCommand::StartSend {
                    reply_id: reply_id.clone(),
                    at,
                });
                self.commit_all(commands, &auto).await?;
                self.reserved.insert(reply_id.clone(), None);
            } else {
                self.reserved.insert(reply_id.clone(), generated);
            }
            let mut parts = crate::split::split_message(&text, control.max_message_chars as usize);
            if parts.is_empty() {
                parts.push(text);
            }
            return Ok(Reservation::Send {
                parts,
                typing,
                trigger,
            });
        }
        // Not sent: commit the decision as it is (with the answer, when it came along).
        let mut commands: Vec<ChatCommand> = generated.into_iter().collect();
        commands.push(ChatCommand::SendReply {
            reply_id,
            message_id: "not-sent".into(),
            at,
            loop_guard,
        });
        self.commit_all(commands, &auto)
            .await
            .map(|_| Reservation::Done)
    }

    /// Records what became of a reserved send: sent (whatever happened in the chat meanwhile),
    /// refused for now (the answer and a shown typing indicator are committed; the worker tries
    /// again later), or refused for good (the reply fails).
    async fn record(
        &mut self,
        reply_id: String,
        outcome: SendOutcome,
    ) -> Result<Delivery, ActorError> {
        let auto = system_meta("system:auto-reply");
        // A record tried again after the store refused it: commit what was decided.
        if let Some(commands) = self.unrecorded.remove(&reply_id) {
            return self.commit_sent(&reply_id, commands, &auto).await;
        }
        let Some(generated) = self.reserved.remove(&reply_id) else {
            return Err(ActorError::Internal(format!(
                "no send of reply {reply_id} is reserved"
            )));
        };
        let mut commands: Vec<ChatCommand> = generated.iter().cloned().collect();
        if !outcome.sent.is_empty() {
            if let Some(e) = &outcome.failed {
                // What the customer has is recorded; the rest of the reply is not sent (a part
                // sent again could repeat one).
                tracing::warn!(reply_id = %reply_id, sent = outcome.sent.len(), reason = %e, "reply sent in part: a further part was not sent");
            }
            commands.push(ChatCommand::RecordSent {
                reply_id: reply_id.clone(),
                parts: outcome.sent,
            });
            return self.commit_sent(&reply_id, commands, &auto).await;
        }
        if let Some(at) = outcome.typed_at {
            commands.push(ChatCommand::Typing {
                reply_id: Some(reply_id.clone()),
                at,
            });
        }
        let delivery = match outcome.failed {
            None => {
                return Err(ActorError::Internal(format!(
                    "reply {reply_id}: a send with no part sent and no failure"
                )))
            }
            Some(e) if e.retryable => Delivery::Retry { reason: e.reason },
            Some(e) => {
                commands.push(ChatCommand::FailReply {
                    reply_id: reply_id.clone(),
                    reason: ReplyReason::SendFailed {
                        attempts: None,
                        detail: e.reason,
                    },
                    attempts: vec![],
                });
                Delivery::Done
            }
        };
        if commands.is_empty() {
            return Ok(delivery);
        }
        match self.commit_all(commands, &auto).await {
            Ok(_) => Ok(delivery),
            Err(e) => {
                // Nothing was sent: the worker's retried step finds the reservation again.
                self.reserved.insert(reply_id, generated);
                Err(e)
            }
        }
    }

    /// Commits the events of a reply the transport took. A failure keeps the commands, so the
    /// retried step commits them instead of sending again; a reply already closed means an
    /// earlier try committed after all.
    async fn commit_sent(
        &mut self,
        reply_id: &str,
        commands: Vec<ChatCommand>,
        meta: &Meta,
    ) -> Result<Delivery, ActorError> {
        if !self.chat.open_replies.contains_key(reply_id) {
            return Ok(Delivery::Done);
        }
        match self.commit_all(commands.clone(), meta).await {
            Ok(_) => Ok(Delivery::Done),
            Err(_) if !self.chat.open_replies.contains_key(reply_id) => Ok(Delivery::Done),
            Err(e) => {
                self.unrecorded.insert(reply_id.to_string(), commands);
                Err(e)
            }
        }
    }

    /// Whether a send is between its decision and its recorded outcome.
    fn sending(&self) -> bool {
        !self.reserved.is_empty() || !self.tickets.is_empty()
    }

    /// Decides the delivery statuses parked while sends were in flight, once none is.
    async fn flush_parked(&mut self) {
        if self.sending() {
            return;
        }
        for parked in std::mem::take(&mut self.parked) {
            let result = self.update_status(parked.update, &parked.meta).await;
            let _ = parked.reply.send(result);
        }
    }

    async fn update_status(
        &mut self,
        update: StatusUpdate,
        meta: &Meta,
    ) -> Result<bool, ActorError> {
        let cmd = ChatCommand::UpdateStatus {
            message_id: update.message_id,
            status: update.status,
            error: update.error,
            at: Utc::now(),
        };
        self.commit(cmd, meta)
            .await
            .map(|(events, _)| !events.is_empty())
    }

    /// Starts a worker for the newest waiting reply, skipping older ones.
    async fn pump(&mut self, myself: &ActorRef<ChatMsg>) {
        if self.active.is_some() {
            return;
        }
        // A notice (handoff or away message) is sent whatever came after it, and first.
        if let Some(i) = self.queue.iter().position(|r| self.chat.is_notice(r)) {
            if i > 0 {
                if let Some(notice) = self.queue.remove(i) {
                    self.queue.push_front(notice);
                }
            }
        }
        while self.queue.len() > 1 && !self.queue.front().is_some_and(|r| self.chat.is_notice(r)) {
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
            // The gateway is stopping: the reply stays open, and whoever runs the account next
            // (this process's next start, or another gateway taking the account over) works on it.
            self.active = None;
            tracing::warn!(reply_id = %next, "the reply supervisor is gone (stopping): the reply is left to the next owner");
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
        let stream_id = chat::stream_id(&args.account.account, &args.jid);
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
            reserved: HashMap::new(),
            tickets: HashSet::new(),
            next_ticket: 0,
            parked: Vec::new(),
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
                mentioned,
                reply_to,
                kind,
                contact_name,
                media,
                meta,
                reply,
            } => {
                // A reply to one of the account's own messages addresses it as a mention does.
                let mentioned = mentioned
                    || reply_to.is_some_and(|id| {
                        matches!(
                            self.chat.message_ids.get(&id),
                            Some(wagate_events::message_window::MessageFact::Sent(_))
                        )
                    });
                let reply_id = uuid::Uuid::now_v7().to_string();
                let control = self.ports.config.control(&self.account.account, &self.jid);
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
                    mentioned,
                    control,
                    media,
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
                            match self.ports.ownership.owner(&self.account.account) {
                                Owner::Here { .. } => {
                                    self.queue.push_back(reply_id);
                                    self.pump(&myself).await;
                                }
                                Owner::Elsewhere => {
                                    // Off this actor: the owner (maybe this process, once it
                                    // takes the lease) asks this chat to refresh.
                                    let ownership = self.ports.ownership.clone();
                                    let (account, jid) =
                                        (self.account.account.clone(), self.jid.clone());
                                    tokio::spawn(async move {
                                        ownership.hand_over(&account, &jid).await;
                                    });
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            ChatMsg::ReserveSend {
                text,
                source,
                reply,
            } => {
                // Validate before anything leaves the gateway.
                let result = self
                    .chat
                    .decide(ChatCommand::Send {
                        message_id: "validation".into(),
                        text,
                        source,
                        at: Utc::now(),
                        takeover: chrono::Duration::zero(),
                    })
                    .map(|_| {
                        self.next_ticket += 1;
                        self.tickets.insert(self.next_ticket);
                        (self.next_ticket, self.account.clone())
                    })
                    .map_err(ActorError::from);
                let _ = reply.send(result);
            }
            ChatMsg::RecordSend {
                ticket,
                text,
                source,
                result,
                meta,
                reply,
            } => {
                self.tickets.remove(&ticket);
                let result = match result {
                    Ok(message_id) => {
                        let takeover = self
                            .ports
                            .config
                            .control(&self.account.account, &self.jid)
                            .takeover;
                        let cmd = ChatCommand::Send {
                            message_id: message_id.clone(),
                            text,
                            source,
                            at: Utc::now(),
                            takeover,
                        };
                        self.commit(cmd, &meta).await.map(|(_, positions)| SentAck {
                            message_id,
                            position: positions.first().copied(),
                        })
                    }
                    Err(e) => Err(ActorError::Transport(e)),
                };
                let _ = reply.send(result);
                self.flush_parked().await;
            }
            ChatMsg::Status {
                message_id,
                status,
                error,
                meta,
                reply,
            } => {
                let update = StatusUpdate {
                    message_id,
                    status,
                    error,
                };
                if self.sending()
                    && self.parked.len() < MAX_PARKED
                    && !self.chat.message_ids.contains(&update.message_id)
                {
                    self.parked.push(Parked {
                        update,
                        meta,
                        reply,
                    });
                } else {
                    let _ = reply.send(self.update_status(update, &meta).await);
                }
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
                    let guard = self
                        .ports
                        .config
                        .control(&self.account.account, &self.jid)
                        .loop_guard;
                    ReplyContext {
                        trigger_text,
                        trigger_message_id: trigger.to_string(),
                        history: self.chat.history.iter().cloned().collect(),
                        loop_guard: self.chat.loop_guard(&guard),
                        superseded: self.chat.superseded(&reply_id),
                        not_before: self.chat.not_before_of(&reply_id),
                        paused: self.chat.pause_reason(now),
                        replies_last_hour: self.chat.ai_replies_last_hour(now),
                        generated: self.chat.is_generated(&reply_id),
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
            ChatMsg::Reserve {
                reply_id,
                typing,
                generated,
                reply,
            } => {
                let result = self.reserve(reply_id, typing, generated.map(|g| *g)).await;
                let _ = reply.send(result);
            }
            ChatMsg::Record {
                reply_id,
                outcome,
                reply,
            } => {
                let result = self.record(reply_id, outcome).await;
                let _ = reply.send(result);
                self.flush_parked().await;
            }
            ChatMsg::Skip {
                reply_id,
                reason,
                reply,
            } => {
                let cmd = ChatCommand::SkipReply { reply_id, reason };
                let _ = reply.send(self.commit(cmd, &auto).await.map(drop));
            }
            ChatMsg::Transcribed {
                message_id,
                text,
                model,
                latency_ms,
                usage,
                reply,
            } => {
                let cmd = ChatCommand::RecordTranscript {
                    message_id,
                    text,
                    model,
                    latency_ms,
                    usage,
                };
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
                // A worker that ended between reserving a send and recording it may or may not
                // have sent: the reply is closed below (never sent again).
                self.reserved.remove(&reply_id);
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
                self.flush_parked().await;
                self.pump(&myself).await;
            }
            ChatMsg::Adopt { reply_ids, reply } => {
                let known = reply_ids.iter().all(|r| {
                    self.queue.contains(r)
                        || self.active.as_deref() == Some(r.as_str())
                        || self.reserved.contains_key(r)
                        || self.unrecorded.contains_key(r)
                });
                if known {
                    let _ = reply.send(Ok(0));
                } else {
                    let result = self.recover(&myself).await;
                    let _ = reply.send(result);
                }
            }
            ChatMsg::CloseInterrupted { reply } => {
                let result = self.recover(&myself).await;
                let _ = reply.send(result);
            }
            ChatMsg::IdleCheck => {
                let idle = self.last_activity.elapsed() >= self.ports.chat_idle;
                if self.active.is_none() && self.queue.is_empty() && !self.sending() && idle {
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }
}
