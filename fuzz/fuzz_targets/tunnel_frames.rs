//! What a hostile device sends after the upgrade: arbitrary bytes as the
//! client side of the WebSocket, read by the relay's WebSocket adapter and
//! yamux. The session must end (or keep running) without a panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    edgelink_fuzz::runtime().block_on(async {
        let (mut device, relay) = tokio::io::duplex(256 * 1024);
        let config = edgelink_tunnel::TunnelConfig::default();
        let session = edgelink_tunnel::session::spawn(relay, &[], edgelink_tunnel::Role::Relay, &config, drop);
        let _ = device.write_all(data).await;
        let _ = device.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), session.ended).await;
    });
});
