//! End-to-end tests: one binary, a module per feature (faster to link).
//! Every test starts its own stack on port 0 against a fresh database.

mod all_endpoints;
mod auth;
mod browser_auth;
mod dev_idp;
mod device_origins;
mod devices;
mod forward;
mod go_device;
mod intermediaries;
mod lifecycle;
mod messages;
mod native_commands;
mod openapi;
mod pairing;
mod postgres;
mod robustness;
mod seed000;
mod ssh;
mod telemetry;
mod tls;
mod tokens;
