//! Every JSON body a device or a stranger sends: pairing exchange,
//! challenge, verify, refresh, heartbeat; and bodies the agent reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<edgelink_api::pairing::ExchangeRequest>(data);
    let _ = serde_json::from_slice::<edgelink_api::device_auth::ChallengeRequest>(data);
    let _ = serde_json::from_slice::<edgelink_api::device_auth::VerifyRequest>(data);
    let _ = serde_json::from_slice::<edgelink_api::device_auth::RefreshRequest>(data);
    let _ = serde_json::from_slice::<edgelink_protocol::heartbeat::Heartbeat>(data);
    let _ = serde_json::from_slice::<edgelink_protocol::heartbeat::HeartbeatAck>(data);
    let _ = serde_json::from_slice::<edgelink_protocol::error::ErrorBody>(data);
    let _ = serde_json::from_slice::<edgelink_auth::token::JwkSet>(data);
});
