//! Application functions the front ends share (`http/`, `dashboard/`, `cli/`): they take the
//! application and who is acting, and return domain results; parsing and rendering stay with
//! the caller.

pub mod keys;
