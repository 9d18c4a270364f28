//! Account actors and the [`Gateway`] that finds them. An account actor owns the chat actors of
//! its active chats (linked children; a stopped chat is forgotten, not a reason to stop the
//! account) and starts a chat actor on first use.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{Mutex, Semaphore};

use wagate_events::chat::{DeliveryStatus, MessageKind, Source, Turn};
use wagate_events::reason::ReplyReason;

use crate::chat::{ChatActor, ChatArgs, ChatMsg, GeneratedReply, ReceiveAck, SentAck};
use crate::ports::{ActorError, Meta, Ports, ReplyConfig, Session};
use crate::supervisor::{AiSupervisor, SupervisorMsg};
use crate::worker::StepError;

/// How often, at most, an account actor asks its chats whether they have been idle long enough
/// to stop (one timer per account, not one task per chat; with a short idle time, twice per idle
/// time).
const IDLE_SWEEP: std::time::Duration = std::time::Duration::from_secs(30);

/// What an account actor owns and lends to its chats and their reply workers: the account's
/// transport session and its model-call slots. It is the unit a lease between gateways will hold.
pub struct AccountHandle {
    pub(crate) account: String,
    pub(crate) session: Arc<dyn Session>,
    pub(crate) model_slots: Arc<Semaphore>,
}

pub enum AccountMsg {
    GetChat {
        jid: String,
        reply: RpcReplyPort<Result<ActorRef<ChatMsg>, ActorError>>,
    },
    /// The account's handle (the test routes call the model with its slots).
    Handle {
        reply: RpcReplyPort<Arc<AccountHandle>>,
    },
    /// Asks every running chat whether it has been idle long enough to stop.
    IdleSweep,
}

pub struct AccountActor;

pub struct AccountArgs {
    pub account: String,
    pub ports: Arc<Ports>,
    pub supervisor: ActorRef<SupervisorMsg>,
}

pub struct AccountState {
    args: AccountArgs,
    handle: Arc<AccountHandle>,
    chats: HashMap<String, ActorRef<ChatMsg>>,
    by_id: HashMap<ActorId, String>,
}

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountState;
    type Arguments = AccountArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AccountMsg>,
        args: AccountArgs,
    ) -> Result<AccountState, ActorProcessingErr> {
        let sweep = IDLE_SWEEP
            .min(args.ports.chat_idle / 2)
            .max(std::time::Duration::from_millis(10));
        myself.send_interval(sweep, || AccountMsg::IdleSweep);
        let handle = Arc::new(AccountHandle {
            account: args.account.clone(),
            session: args.ports.transport.open(&args.account).await,
            model_slots: args.ports.limits.account_slots(),
        });
        Ok(AccountState {
            args,
            handle,
            chats: HashMap::new(),
            by_id: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AccountMsg>,
        msg: AccountMsg,
        st: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AccountMsg::GetChat { jid, reply } => {
                if let Some(chat) = st.chats.get(&jid) {
                    let _ = reply.send(Ok(chat.clone()));
                    return Ok(());
                }
                let args = ChatArgs {
                    account: st.handle.clone(),
                    jid: jid.clone(),
                    ports: st.args.ports.clone(),
                    supervisor: st.args.supervisor.clone(),
                };
                let result =
                    match Actor::spawn_linked(None, ChatActor, args, myself.get_cell()).await {
                        Ok((chat, _)) => {
                            st.by_id.insert(chat.get_id(), jid.clone());
                            st.chats.insert(jid, chat.clone());
                            Ok(chat)
                        }
                        Err(e) => Err(ActorError::Unavailable(format!(
                            "cannot start the chat: {e}"
                        ))),
                    };
                let _ = reply.send(result);
            }
            AccountMsg::Handle { reply } => {
                let _ = reply.send(st.handle.clone());
            }
            AccountMsg::IdleSweep => {
                for chat in st.chats.values() {
                    let _ = chat.cast(ChatMsg::IdleCheck);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<AccountMsg>,
        st: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        st.handle.session.close().await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<AccountMsg>,
        evt: SupervisionEvent,
        st: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        let gone = match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => Some(cell.get_id()),
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(error = %err, "chat actor failed; it restarts on next use");
                Some(cell.get_id())
            }
            _ => None,
        };
        if let Some(jid) = gone.and_then(|id| st.by_id.remove(&id)) {
            st.chats.remove(&jid);
        }
        Ok(())
    }
}

/// A message that arrived in a chat, for [`Gateway::receive`].
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The transport's message id (a repeat is a duplicate: no second event, no second reply).
    pub message_id: String,
    pub from: String,
    pub text: String,
    /// Sent by the account itself (from another device): recorded, never answered.
    pub from_me: bool,
    /// Whether the message may trigger an AI reply (the rules decide at reply time).
    pub reply_candidate: bool,
    pub kind: MessageKind,
    pub contact_name: Option<String>,
    /// The message mentions the account (`trigger: mention`).
    pub mentioned: bool,
    /// The message it replies to: one of the account's own counts as a mention.
    pub reply_to: Option<String>,
    /// The message's media (recorded without its bytes).
    pub media: Option<wagate_events::chat::MediaInfo>,
}

/// A census of the actor system (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActorCounts {
    pub accounts: usize,
    pub chats: usize,
    pub reply_workers: usize,
}

/// Finds (or starts) the actors of accounts and chats.
pub struct Gateway {
    ports: Arc<Ports>,
    supervisor: ActorRef<SupervisorMsg>,
    accounts: Mutex<HashMap<String, ActorRef<AccountMsg>>>,
    /// Running chat actors by (account, jid), so a message to a running chat does not wait on its
    /// account actor. Only a hint: a stopped chat found here is asked for again through its
    /// account actor, which is the one that starts chats.
    running: std::sync::RwLock<HashMap<(String, String), ActorRef<ChatMsg>>>,
    /// Model-call slots of test calls made for no account (the global layer).
    unbound_slots: Arc<Semaphore>,
}

impl Gateway {
    pub async fn start(ports: Ports) -> Result<Arc<Gateway>, ActorError> {
        let ports = Arc::new(ports);
        let (supervisor, _) = Actor::spawn(None, AiSupervisor, ports.clone())
            .await
            .map_err(|e| ActorError::Internal(format!("cannot start the AI supervisor: {e}")))?;
        Ok(Arc::new(Gateway {
            unbound_slots: ports.limits.account_slots(),
            ports,
            supervisor,
            accounts: Mutex::new(HashMap::new()),
            running: Default::default(),
        }))
    }

    /// How many actors run now: accounts, chats, reply workers.
    pub async fn counts(&self) -> ActorCounts {
        let accounts = self.accounts.lock().await;
        ActorCounts {
            accounts: accounts.len(),
            chats: accounts.values().map(|a| a.get_children().len()).sum(),
            reply_workers: self.supervisor.get_children().len(),
        }
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    async fn account(&self, account: &str) -> Result<ActorRef<AccountMsg>, ActorError> {
        let mut map = self.accounts.lock().await;
        if let Some(a) = map.get(account) {
            if a.get_status() == ractor::ActorStatus::Running {
                return Ok(a.clone());
            }
        }
        let args = AccountArgs {
            account: account.to_string(),
            ports: self.ports.clone(),
            supervisor: self.supervisor.clone(),
        };
        let (a, _) = Actor::spawn(None, AccountActor, args)
            .await
            .map_err(|e| ActorError::Internal(format!("cannot start the account actor: {e}")))?;
        map.insert(account.to_string(), a.clone());
        Ok(a)
    }

    /// Starts `account`'s actor unless it runs (its session opens with it: a WhatsApp Web
    /// account connects).
    pub async fn open_account(&self, account: &str) -> Result<(), ActorError> {
        self.account(account).await.map(|_| ())
    }

    /// The chat actor of `jid` in `account`, started if needed.
    pub async fn chat(&self, account: &str, jid: &str) -> Result<ActorRef<ChatMsg>, ActorError> {
        let key = (account.to_string(), jid.to_string());
        if let Some(chat) = self
            .running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|c| c.get_status() == ractor::ActorStatus::Running)
        {
            return Ok(chat.clone());
        }
        let chat = self.start_chat(account, jid).await?;
        let mut running = self.running.write().unwrap_or_else(|p| p.into_inner());
        // Forget chats that stopped (passivated) since, so the map stays the size of the
        // running set.
        if running.len() >= 1024 && running.len().is_power_of_two() {
            running.retain(|_, c| c.get_status() == ractor::ActorStatus::Running);
        }
        running.insert(key, chat.clone());
        Ok(chat)
    }

    /// Asks the account actor for the chat actor (it starts one if needed).
    async fn start_chat(&self, account: &str, jid: &str) -> Result<ActorRef<ChatMsg>, ActorError> {
        let acc = self.account(account).await?;
        match acc
            .call(
                |reply| AccountMsg::GetChat {
                    jid: jid.to_string(),
                    reply,
                },
                Some(self.ports.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r,
            Ok(CallResult::Timeout) => {
                Err(ActorError::Unavailable("the account is busy; retry".into()))
            }
            _ => Err(ActorError::Unavailable(
                "the account actor stopped; retry".into(),
            )),
        }
    }

    /// Records an inbound message in its chat (committed before this returns) and, when it may
    /// be answered, the reply request with it.
    pub async fn receive(
        &self,
        account: &str,
        jid: &str,
        inbound: Inbound,
        meta: Meta,
    ) -> Result<ReceiveAck, ActorError> {
        self.ask(account, jid, |reply| ChatMsg::Receive {
            message_id: inbound.message_id.clone(),
            from: inbound.from.clone(),
            text: inbound.text.clone(),
            from_me: inbound.from_me,
            reply_candidate: inbound.reply_candidate,
            mentioned: inbound.mentioned,
            reply_to: inbound.reply_to.clone(),
            kind: inbound.kind,
            contact_name: inbound.contact_name.clone(),
            media: inbound.media.clone(),
            meta: meta.clone(),
            reply,
        })
        .await
    }

    /// Records a delivery status of an outbound message; whether an event was recorded.
    pub async fn status(
        &self,
        account: &str,
        jid: &str,
        message_id: &str,
        status: DeliveryStatus,
        error: Option<String>,
        meta: Meta,
    ) -> Result<bool, ActorError> {
        self.ask(account, jid, |reply| ChatMsg::Status {
            message_id: message_id.to_string(),
            status,
            error: error.clone(),
            meta: meta.clone(),
            reply,
        })
        .await
    }

    /// Sends `text` into a chat as the account (an operator, or a test reply). The chat validates
    /// it and opens a ticket; the transport is called outside the chat actor (which keeps taking
    /// messages), in a task that runs to the end even if the caller goes away, so a message the
    /// transport took is always recorded (retried while the store is busy, never twice).
    pub async fn send(
        &self,
        account: &str,
        jid: &str,
        text: &str,
        source: Source,
        meta: Meta,
    ) -> Result<SentAck, ActorError> {
        let (ticket, handle) = self
            .ask(account, jid, |reply| ChatMsg::ReserveSend {
                text: text.to_string(),
                source,
                reply,
            })
            .await?;
        let chat = self.chat(account, jid).await?;
        let ports = self.ports.clone();
        let (jid, text) = (jid.to_string(), text.to_string());
        let task = tokio::spawn(async move {
            let result = handle.session.send_text(&jid, &text).await;
            let record = |reply| ChatMsg::RecordSend {
                ticket,
                text: text.clone(),
                source,
                result: result.clone(),
                meta: meta.clone(),
                reply,
            };
            crate::worker::commit_step(&chat, ports.call_timeout, "operator send", record)
                .await
                .map_err(|e| match e {
                    StepError::Actor(e) => e,
                    StepError::ChatTimeout => {
                        ActorError::Unavailable("the chat is busy; retry".into())
                    }
                    StepError::ChatGone => ActorError::Internal(
                        "the chat actor stopped before the send was recorded".into(),
                    ),
                })
        });
        task.await
            .map_err(|e| ActorError::Internal(format!("the send task failed: {e}")))?
    }

    /// Answers `trigger_text` as a reply of `account` (or the global layer's, `None`) would, through the reply pipeline's answer
    /// step (history budget and window, concurrency limits, retries, fallback; see
    /// `worker::generate`), without a chat actor: the test routes. Nothing is recorded.
    pub async fn generate(
        &self,
        account: Option<&str>,
        cfg: &ReplyConfig,
        history: &[Turn],
        trigger_text: &str,
    ) -> Result<GeneratedReply, ReplyReason> {
        let slots = match account {
            Some(account) => {
                let acc = self
                    .account(account)
                    .await
                    .map_err(|_| ReplyReason::ShuttingDown)?;
                match acc
                    .call(
                        |reply| AccountMsg::Handle { reply },
                        Some(self.ports.call_timeout),
                    )
                    .await
                {
                    Ok(CallResult::Success(handle)) => handle.model_slots.clone(),
                    _ => return Err(ReplyReason::ShuttingDown),
                }
            }
            None => self.unbound_slots.clone(),
        };
        crate::worker::generate(
            &self.ports,
            &slots,
            "test",
            cfg,
            history,
            trigger_text,
            &Default::default(),
        )
        .await
        .map_err(|(reason, _)| reason)
    }

    /// Ends a human-takeover pause in a chat now; whether one was running.
    pub async fn resume(&self, account: &str, jid: &str, meta: Meta) -> Result<bool, ActorError> {
        self.ask(account, jid, |reply| ChatMsg::Resume {
            meta: meta.clone(),
            reply,
        })
        .await
    }

    /// Recovers a chat's open replies that no worker of this process has (a restart, a
    /// takeover, or a reply requested on another gateway): the chat reloads its stream, closes
    /// the ones that may have been handed to the transport (failed, reason `interrupted`: never
    /// sent twice) or that are superseded, and works on the others; how many it closed. Nothing
    /// happens in a process that does not run the account.
    pub async fn close_interrupted(&self, account: &str, jid: &str) -> Result<usize, ActorError> {
        self.ask(account, jid, |reply| ChatMsg::CloseInterrupted { reply })
            .await
    }

    /// Recovers a chat's replies as [`Gateway::close_interrupted`] does, unless its chat actor
    /// already works on every one of `reply_ids` (then without reading the store); how many it
    /// closed.
    pub async fn adopt(
        &self,
        account: &str,
        jid: &str,
        reply_ids: Vec<String>,
    ) -> Result<usize, ActorError> {
        self.ask(account, jid, |reply| ChatMsg::Adopt {
            reply_ids: reply_ids.clone(),
            reply,
        })
        .await
    }

    /// Sends a request to a chat actor and waits for its answer, once more if the chat actor
    /// stopped (passivated) in between.
    pub(crate) async fn ask<T: Send + 'static>(
        &self,
        account: &str,
        jid: &str,
        build: impl Fn(RpcReplyPort<Result<T, ActorError>>) -> ChatMsg,
    ) -> Result<T, ActorError> {
        for _ in 0..2 {
            let chat = self.chat(account, jid).await?;
            match chat.call(&build, Some(self.ports.call_timeout)).await {
                Ok(CallResult::Success(r)) => return r,
                Ok(CallResult::Timeout) => {
                    return Err(ActorError::Unavailable("the chat is busy; retry".into()))
                }
                _ => continue,
            }
        }
        Err(ActorError::Unavailable(
            "the chat actor stopped; retry".into(),
        ))
    }

    /// Stops an account's actors because this process gained or lost the account's lease: the
    /// next use starts them again, knowing who runs the account's replies now.
    pub async fn restart_account(&self, account: &str) {
        self.stop_actors(account, "account lease changed").await;
    }

    /// Stops an account's actors (account deleted).
    pub async fn stop_account(&self, account: &str) {
        self.stop_actors(account, "account deleted").await;
    }

    async fn stop_actors(&self, account: &str, why: &str) {
        let stopped = self.accounts.lock().await.remove(account);
        if let Some(a) = stopped {
            // Its chats first, then itself; wait, so no chat of the account runs twice.
            a.stop_children_and_wait(Some(why.into()), Some(self.ports.call_timeout))
                .await;
            if let Err(e) = a
                .stop_and_wait(Some(why.into()), Some(self.ports.call_timeout))
                .await
            {
                tracing::warn!(error = %e, "an account actor did not stop in time");
            }
        }
        self.running
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(acc, _), _| acc != account);
    }

    /// Stops every actor.
    pub async fn shutdown(&self) {
        // The chats first (waited for), so no chat records a reply failed by the stop of its
        // worker: the replies in flight stay open for the next owner.
        let accounts: Vec<ActorRef<AccountMsg>> =
            self.accounts.lock().await.drain().map(|(_, a)| a).collect();
        for a in accounts {
            a.stop_children_and_wait(None, Some(self.ports.call_timeout))
                .await;
            if let Err(e) = a.stop_and_wait(None, Some(self.ports.call_timeout)).await {
                tracing::warn!(error = %e, "an account actor did not stop in time");
            }
        }
        self.running
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.supervisor.stop(None);
    }
}
