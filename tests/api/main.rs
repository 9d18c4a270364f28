//! Integration tests: each runs a real gateway on port 0 against SQLite and against PostgreSQL.

mod helpers;

mod accounts;
mod ai_config;
mod api_rate_limit;
mod auth;
mod bad_input;
mod checkpoint;
mod cloud_api;
mod cluster;
mod control;
mod crash;
mod dashboard;
mod dashboard_webhooks;
mod edge;
mod events;
mod fake_web;
mod group_commit;
mod history;
mod lifecycle;
mod login_abuse;
mod logout;
mod long_chats;
mod media;
mod metrics;
mod replies;
mod retention;
mod search;
mod security;
mod speak;
mod stats;
mod webhooks;
mod whatsapp_web;
mod whatsapp_web_live;
