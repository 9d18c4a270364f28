//! The dashboard's live feeds (Server-Sent Events): pages that follow the gateway — a chat's
//! thread, an account's chat list, the AI log — are told when the read models folded events of a
//! chat they show, and refetch their live parts (`assets/dashboard.js`).

use axum::response::Response;

use crate::app::SharedApp;

/// A live feed (Server-Sent Events) of the folds that touched a chat `wanted` accepts (by its
/// stream id, `<account>/<jid>`): a `changed` event for each, a missed stretch (the feed fell
/// behind) counting as one. Ends when the server stops; the browser reconnects by itself.
pub fn feed(app: &SharedApp, wanted: impl Fn(&str) -> bool + Send + 'static) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::response::IntoResponse;
    use tokio::sync::broadcast::error::RecvError;
    let state = (
        app.read.chats_folded.subscribe(),
        app.read.stopping.subscribe(),
        wanted,
    );
    let events = futures::stream::unfold(state, |(mut folded, mut stopping, wanted)| async move {
        loop {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return None,
                next = folded.recv() => match next {
                    Ok(chats) if chats.iter().any(|c| wanted(c)) => break,
                    Ok(_) => {}
                    // Missed some folds: one of them may have been a wanted chat's.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return None,
                },
            }
        }
        // Browsers drop an event whose data is empty.
        let event = Event::default().event("changed").data("chat");
        Some((
            Ok::<_, std::convert::Infallible>(event),
            (folded, stopping, wanted),
        ))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
