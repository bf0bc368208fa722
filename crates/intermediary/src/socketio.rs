//! Just enough of a Socket.IO client for seed 001: Engine.IO protocol 4
//! over the WebSocket transport (no long-polling), Socket.IO protocol 5
//! packets in text frames, one namespace, events without binary
//! attachments. Servers that speak Socket.IO 3 or 4 (socket.io for Node,
//! python-socketio 5, socketioxide) accept a client that opens with the
//! WebSocket transport directly.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Largest Socket.IO message accepted (an `execute_command` is small).
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// Why the connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL is not usable.
    #[error("bad server URL: {0}")]
    Url(String),
    /// Connecting or the WebSocket failed.
    #[error("connection: {0}")]
    Connection(String),
    /// The server refused the namespace connection (bad credentials…).
    #[error("the server refused the connection: {0}")]
    Refused(String),
    /// The server broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server stopped sending pings.
    #[error("no ping from the server within {0:?}")]
    Silent(Duration),
    /// The server closed the connection or disconnected the namespace.
    #[error("the server closed the connection")]
    Closed,
}

/// One Socket.IO packet of this namespace, as read from an Engine.IO
/// message (`4` prefix removed).
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// CONNECT (client → server with auth; server → client with sid).
    Connect(Option<Value>),
    /// DISCONNECT.
    Disconnect,
    /// EVENT: name and arguments, with an ack id if one was asked for.
    Event { name: String, args: Vec<Value>, ack: Option<u64> },
    /// ACK of one of our events.
    Ack { id: u64, args: Vec<Value> },
    /// CONNECT_ERROR with the server's data.
    ConnectError(Value),
}

/// Encodes a packet for `namespace` as an Engine.IO message.
pub fn encode(namespace: &str, packet: &Packet) -> String {
    let nsp = if namespace == "/" { String::new() } else { format!("{namespace},") };
    match packet {
        Packet::Connect(None) => format!("40{nsp}"),
        Packet::Connect(Some(auth)) => format!("40{nsp}{auth}"),
        Packet::Disconnect => format!("41{nsp}"),
        Packet::Event { name, args, ack } => {
            let mut items = vec![Value::String(name.clone())];
            items.extend(args.iter().cloned());
            format!("42{nsp}{}{}", ack.map(|a| a.to_string()).unwrap_or_default(), Value::Array(items))
        }
        Packet::Ack { id, args } => format!("43{nsp}{id}{}", Value::Array(args.clone())),
        Packet::ConnectError(data) => format!("44{nsp}{data}"),
    }
}

/// Decodes a Socket.IO packet (the text after Engine.IO's `4`). Returns
/// the namespace and the packet.
pub fn decode(text: &str) -> Result<(String, Packet), Error> {
    let bad = |why: &str| Error::Protocol(format!("{why}: {}", text.chars().take(80).collect::<String>()));
    let kind = text.chars().next().ok_or_else(|| bad("empty packet"))?;
    if matches!(kind, '5' | '6') {
        return Err(bad("binary packets are not supported"));
    }
    let mut rest = &text[kind.len_utf8()..];
    let namespace = if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        let nsp = rest[..end].to_owned();
        rest = rest.get(end + 1..).unwrap_or("");
        nsp
    } else {
        "/".to_owned()
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 { Some(rest[..digits].parse::<u64>().map_err(|_| bad("bad ack id"))?) } else { None };
    let data = &rest[digits..];
    let json = |s: &str| serde_json::from_str::<Value>(s).map_err(|_| bad("bad JSON"));
    let packet = match kind {
        '0' => Packet::Connect(if data.is_empty() { None } else { Some(json(data)?) }),
        '1' => Packet::Disconnect,
        '2' | '3' => {
            let Value::Array(mut items) = json(data)? else { return Err(bad("event data is not an array")) };
            if kind == '3' {
                Packet::Ack { id: id.ok_or_else(|| bad("ack without id"))?, args: items }
            } else {
                if items.is_empty() {
                    return Err(bad("event without a name"));
                }
                let Value::String(name) = items.remove(0) else { return Err(bad("event name is not a string")) };
                Packet::Event { name, args: items, ack: id }
            }
        }
        '4' => Packet::ConnectError(if data.is_empty() { Value::Null } else { json(data)? }),
        _ => return Err(bad("unknown packet type")),
    };
    Ok((namespace, packet))
}

/// Where to connect: the WebSocket URL of the Engine.IO endpoint and the
/// namespace.
pub fn endpoint(server: &str, query: &[(&str, &str)], engine_path: &str) -> Result<(url::Url, String), Error> {
    let mut url = url::Url::parse(server).map_err(|e| Error::Url(e.to_string()))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => return Err(Error::Url(format!("unsupported scheme {other}"))),
    };
    url.set_scheme(scheme).map_err(|_| Error::Url("cannot set the scheme".into()))?;
    // As socket.io clients read it: the URL's path is the namespace.
    let namespace = match url.path().trim_end_matches('/') {
        "" => "/proxy".to_owned(),
        path => path.to_owned(),
    };
    url.set_path(engine_path);
    url.set_fragment(None);
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        q.append_pair("EIO", "4").append_pair("transport", "websocket");
        for (k, v) in query {
            q.append_pair(k, v);
        }
    }
    Ok((url, namespace))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connected namespace.
pub struct Client {
    ws: Ws,
    namespace: String,
    /// Ping interval + timeout from the server's open packet.
    liveness: Duration,
}

impl Client {
    /// Opens the WebSocket, reads Engine.IO's open packet and connects to
    /// the namespace with `auth`.
    pub async fn connect(
        url: url::Url,
        namespace: String,
        auth: Option<Value>,
        tls: std::sync::Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Client, Error> {
        let conn = |e: String| Error::Connection(e);
        let req = url.as_str().into_client_request().map_err(|e| Error::Url(e.to_string()))?;
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(MAX_MESSAGE);
        config.max_frame_size = Some(MAX_MESSAGE);
        let dial = tokio_tungstenite::connect_async_tls_with_config(
            req,
            Some(config),
            false,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        );
        let (ws, _) = tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| conn(format!("no answer within {timeout:?}")))?
            .map_err(|e| conn(e.to_string()))?;
        let mut client = Client { ws, namespace, liveness: timeout };
        let open = tokio::time::timeout(timeout, client.next_text())
            .await
            .map_err(|_| Error::Protocol("no Engine.IO open packet".into()))??;
        let open = open.strip_prefix('0').ok_or_else(|| Error::Protocol("the first packet is not OPEN".into()))?;
        let open: Value = serde_json::from_str(open).map_err(|_| Error::Protocol("bad OPEN packet".into()))?;
        let ms = |k: &str| open.get(k).and_then(Value::as_u64).unwrap_or(25_000);
        client.liveness = Duration::from_millis(ms("pingInterval") + ms("pingTimeout"));
        let hello = encode(&client.namespace, &Packet::Connect(auth));
        client.ws.send(Message::text(hello)).await.map_err(|e| conn(e.to_string()))?;
        loop {
            match tokio::time::timeout(timeout, client.next_packet())
                .await
                .map_err(|_| Error::Protocol("no answer to CONNECT".into()))??
            {
                Packet::Connect(_) => return Ok(client),
                Packet::ConnectError(data) => {
                    let message = data.get("message").and_then(Value::as_str).map(str::to_owned);
                    return Err(Error::Refused(message.unwrap_or_else(|| data.to_string())));
                }
                Packet::Disconnect => return Err(Error::Closed),
                _ => {}
            }
        }
    }

    /// The next Engine.IO text message, answering pings on the way.
    async fn next_text(&mut self) -> Result<String, Error> {
        loop {
            let msg = self.ws.next().await.ok_or(Error::Closed)?.map_err(|e| Error::Connection(e.to_string()))?;
            match msg {
                Message::Text(t) => {
                    let t = t.as_str();
                    match t.as_bytes().first() {
                        Some(b'2') => {
                            // PING: answer PONG with the same payload.
                            let pong = format!("3{}", &t[1..]);
                            self.ws.send(Message::text(pong)).await.map_err(|e| Error::Connection(e.to_string()))?;
                        }
                        Some(b'1') => return Err(Error::Closed),
                        Some(b'6') | Some(b'3') => {}
                        _ => return Ok(t.to_owned()),
                    }
                }
                Message::Close(_) => return Err(Error::Closed),
                Message::Binary(_) => return Err(Error::Protocol("binary message".into())),
                _ => {}
            }
        }
    }

    /// The next packet for our namespace; fails when the server has been
    /// silent (no ping) for longer than its ping interval and timeout.
    pub async fn next_packet(&mut self) -> Result<Packet, Error> {
        loop {
            let liveness = self.liveness;
            let text =
                tokio::time::timeout(liveness, self.next_text()).await.map_err(|_| Error::Silent(liveness))??;
            let Some(sio) = text.strip_prefix('4') else { continue };
            let (namespace, packet) = decode(sio)?;
            if namespace != self.namespace {
                continue;
            }
            if packet == Packet::Disconnect {
                return Err(Error::Closed);
            }
            return Ok(packet);
        }
    }

    /// Emits an event with one argument.
    pub async fn emit(&mut self, name: &str, data: Value) -> Result<(), Error> {
        let text = encode(&self.namespace, &Packet::Event { name: name.to_owned(), args: vec![data], ack: None });
        self.ws.send(Message::text(text)).await.map_err(|e| Error::Connection(e.to_string()))
    }

    /// Acknowledges an event that asked for it.
    pub async fn ack(&mut self, id: u64, data: Value) -> Result<(), Error> {
        let text = encode(&self.namespace, &Packet::Ack { id, args: vec![data] });
        self.ws.send(Message::text(text)).await.map_err(|e| Error::Connection(e.to_string()))
    }

    /// Leaves the namespace and closes the WebSocket.
    pub async fn close(mut self) {
        let _ = self.ws.send(Message::text(encode(&self.namespace, &Packet::Disconnect))).await;
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn packets_round_trip_in_the_wire_format() {
        let ev = Packet::Event { name: "command_result".into(), args: vec![json!({"a": 1})], ack: None };
        assert_eq!(encode("/proxy", &ev), r#"42/proxy,["command_result",{"a":1}]"#);
        assert_eq!(decode(&encode("/proxy", &ev)[1..]).unwrap(), ("/proxy".to_owned(), ev));
        assert_eq!(encode("/proxy", &Packet::Connect(Some(json!({"k": "v"})))), r#"40/proxy,{"k":"v"}"#);
        assert_eq!(encode("/", &Packet::Connect(None)), "40");
        assert_eq!(
            decode(r#"2/proxy,7["execute_command",{"x":1}]"#).unwrap().1,
            Packet::Event { name: "execute_command".into(), args: vec![json!({"x": 1})], ack: Some(7) }
        );
        assert_eq!(decode(r#"0/proxy,{"sid":"abc"}"#).unwrap().1, Packet::Connect(Some(json!({"sid": "abc"}))));
        assert_eq!(
            decode(r#"4/proxy,{"message":"bad key"}"#).unwrap().1,
            Packet::ConnectError(json!({"message": "bad key"}))
        );
        assert_eq!(decode("1/proxy,").unwrap().1, Packet::Disconnect);
        assert_eq!(
            decode(r#"2["hi"]"#).unwrap(),
            ("/".to_owned(), Packet::Event { name: "hi".into(), args: vec![], ack: None })
        );
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        for bad in ["", "2/proxy,", "2/proxy,{}", "2/proxy,[1]", "2/proxy,[]", "9", "3/proxy,[]", "51-/proxy,[]"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_url_path_names_the_namespace() {
        let (url, nsp) = endpoint("http://main.example:3000/proxy", &[("proxyId", "p 1")], "/socket.io/").unwrap();
        assert_eq!(nsp, "/proxy");
        assert_eq!(url.as_str(), "ws://main.example:3000/socket.io/?EIO=4&transport=websocket&proxyId=p+1");
        let (url, nsp) = endpoint("https://main.example", &[], "/socket.io/").unwrap();
        assert_eq!((url.scheme(), nsp.as_str()), ("wss", "/proxy"));
        assert!(endpoint("ftp://x", &[], "/socket.io/").is_err());
    }
}
