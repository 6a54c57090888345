//! End-to-end tests, one binary (link time matters on 2 cores), a module per theme.
//! Every test runs the real master and slave binaries against a real PostgreSQL and git daemon.
//! The slow tier (real image builds) is `#[ignore]`d here and run by `scripts/test.sh`.

mod admin;
mod authz;
mod bad_input;
mod boot;
mod browser;
mod builds;
mod capabilities;
mod churn;
mod console_daily;
mod console_server;
mod db;
mod enrol;
mod exec_backend;
mod failures;
mod flood;
mod git_cache;
mod hardening;
mod images;
mod isolation;
mod latency;
mod launchpad;
mod leftovers;
mod localdb;
mod log_search;
mod masters;
mod metrics;
mod notify;
mod object_store;
mod oidc;
mod oidc_browser;
mod packaging;
mod protocol;
mod queue;
mod quotas;
mod readoption;
mod record;
mod resilience;
mod sessions;
mod setup;
mod tls;
mod upgrade;
