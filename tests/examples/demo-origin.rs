//! The demo device's local web service for `make run`:
//! `demo-origin [ADDR]` (default 127.0.0.1:8080).

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("demo origin listening on http://{}", listener.local_addr()?);
    edgelink_e2e::origin::serve(listener).await;
    Ok(())
}
