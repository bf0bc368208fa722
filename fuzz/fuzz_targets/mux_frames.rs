//! What a hostile peer sends as yamux, below the WebSocket: arbitrary bytes
//! read by the tunnel's own yamux (`edgelink_tunnel::mux`), with streams the
//! peer opens read and answered and one stream of ours open. The connection
//! must end (or keep running) without a panic or a hang.
#![no_main]

use std::future::poll_fn;
use std::time::Duration;

use edgelink_tunnel::mux::{Connection, Mode, MuxConfig};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::TokioAsyncReadCompatExt;

fuzz_target!(|data: &[u8]| {
    edgelink_fuzz::runtime().block_on(async {
        let mut tasks = Vec::new();
        {
            let (mut peer, ours) = tokio::io::duplex(256 * 1024);
            let config =
                MuxConfig { max_streams: 8, window_growth: 1 << 20, split_send: 48 * 1024, ack_at_once: true };
            let (mut conn, control) = Connection::new(ours.compat(), Mode::Client, config);
            if let Ok(mut s) = control.open() {
                tasks.push(tokio::spawn(async move {
                    let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                }));
            }
            let mut on_inbound = |mut s: edgelink_tunnel::mux::Stream| {
                tasks.push(tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown().await;
                }));
            };
            let _ = peer.write_all(data).await;
            let _ = peer.shutdown().await;
            let drive = poll_fn(|cx| conn.poll(cx, &mut on_inbound));
            let _ = tokio::time::timeout(Duration::from_millis(200), drive).await;
            // The connection is dropped here: every stream is reset.
        }
        // The stream tasks must end once their connection is gone (a task
        // still waiting is a leak the fuzzer reports as a timeout); run
        // them to the end here, or they would pile up across inputs.
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("a stream task outlived its connection by 5 s")
                .expect("a stream task panicked");
        }
    });
});
