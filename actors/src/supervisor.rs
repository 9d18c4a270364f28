//! The AI supervisor: spawns one linked reply worker per reply and keeps running whatever its
//! children do (ractor's default would stop a supervisor when a child exits). A worker that
//! panics gets its reply closed as failed, so no reply stays open.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::account::AccountHandle;
use crate::chat::ChatMsg;
use crate::ports::Ports;
use crate::worker::{ReplyWorker, WorkerArgs};

pub enum SupervisorMsg {
    Start {
        account: Arc<AccountHandle>,
        jid: String,
        reply_id: String,
        chat: ActorRef<ChatMsg>,
    },
}

pub struct AiSupervisor;

pub struct SupervisorState {
    ports: Arc<Ports>,
    workers: HashMap<ActorId, (String, ActorRef<ChatMsg>)>,
}

impl Actor for AiSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Ports>;

    async fn pre_start(
        &self,
        _: ActorRef<SupervisorMsg>,
        ports: Arc<Ports>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            ports,
            workers: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start {
                account,
                jid,
                reply_id,
                chat,
            } => {
                let args = WorkerArgs {
                    account,
                    jid,
                    reply_id: reply_id.clone(),
                    chat: chat.clone(),
                    ports: st.ports.clone(),
                };
                match Actor::spawn_linked(None, ReplyWorker, args, myself.get_cell()).await {
                    Ok((worker, _)) => {
                        st.workers.insert(worker.get_id(), (reply_id, chat));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot spawn a reply worker");
                        let _ = chat.cast(ChatMsg::WorkerDone { reply_id });
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                st.workers.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some((reply_id, chat)) = st.workers.remove(&cell.get_id()) {
                    tracing::error!(reply_id = %reply_id, error = %err, "reply worker failed");
                    // The chat closes the reply as failed when it hears the worker is gone.
                    let _ = chat.cast(ChatMsg::WorkerDone { reply_id });
                }
            }
            _ => {}
        }
        Ok(())
    }
}
