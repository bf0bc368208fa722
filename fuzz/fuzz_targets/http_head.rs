//! A request as it arrives on a tunnel stream or a listener: arbitrary
//! bytes served by `edgelink_hop::serve` (hyper with edgelink's limits).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    edgelink_fuzz::runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(128 * 1024);
        let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let mut req = req;
            let _ = edgelink_hop::prepare(&mut req, &[http::header::AUTHORIZATION]);
            let _ = edgelink_protocol::bearer::token(req.headers());
            let _ = edgelink_protocol::paths::is_control_path(req.uri().path());
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
        });
        let served = tokio::spawn(edgelink_hop::serve(server, svc, Duration::from_millis(100)));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(300), client.read_to_end(&mut sink)).await;
        served.abort();
    });
});
