//! Application functions the front ends share (`http/`, `dashboard/`, `cli/`): they take the
//! application and who is acting, check the input, and return domain results or an [`Error`];
//! parsing, authorisation of the caller and rendering stay with the front end.

pub mod accounts;
pub mod ai;
pub mod auth;
pub mod error;
pub mod events;
pub mod keys;
pub mod messages;
pub mod nodes;
pub mod stats;
pub mod test_reply;
pub mod webhooks;
pub mod whatsapp_web;

pub use error::{Error, Result};

/// A page of a list: `next_cursor` is `None` on the last page.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of at most `limit` items: a full page's last item gives the cursor of the next.
    pub fn of(items: Vec<T>, limit: usize, cursor: impl FnOnce(&T) -> String) -> Self {
        let next_cursor = (items.len() == limit)
            .then(|| items.last().map(cursor))
            .flatten();
        Self { items, next_cursor }
    }
}
