// A device written against the public protocol only, in Go, on
// hashicorp/yamux and gorilla/websocket: the interoperability check of
// docs/protocol.md. It authenticates with its Ed25519 key (challenge,
// verify), dials the tunnel, serves HTTP (and a WebSocket echo) on the
// streams the relay opens, and sends one heartbeat on a stream it opens
// itself. It prints what happened, one line each, for the test to read:
//
//	ready
//	heartbeat <status> <body>
//	closed <code> <reason>
//
// Built by tests/tests/e2e/go_device.rs with Debian's Go and the Debian
// packages of both libraries (GOPATH mode, no module download).
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"
)

func main() {
	api := flag.String("api", "", "api-server base URL")
	tunnel := flag.String("tunnel", "", "relay tunnel URL (ws://…/tunnel)")
	device := flag.String("device", "", "device id")
	keyFile := flag.String("key", "", "PKCS#8 PEM Ed25519 private key")
	flag.Parse()

	key, err := loadKey(*keyFile)
	check("key", err)
	token, err := authenticate(*api, *device, key)
	check("authenticate", err)

	header := http.Header{}
	header.Set("Authorization", "Bearer "+token)
	dialer := websocket.Dialer{Subprotocols: []string{"edgelink.yamux.v1"}, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := dialer.Dial(*tunnel, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		check("dial", fmt.Errorf("%v (status %d)", err, status))
	}
	if ws.Subprotocol() != "edgelink.yamux.v1" {
		check("dial", fmt.Errorf("relay chose subprotocol %q", ws.Subprotocol()))
	}
	conn := newWsConn(ws)

	cfg := yamux.DefaultConfig()
	cfg.LogOutput = os.Stderr
	session, err := yamux.Server(conn, cfg)
	check("yamux", err)
	fmt.Println("ready")

	go heartbeat(session)
	// The relay opens a stream per forwarded connection; a yamux session
	// is a net.Listener of them.
	_ = http.Serve(wakeListener{session}, routes())
	code, reason := conn.closed()
	fmt.Printf("closed %d %s\n", code, reason)
}

// wakeListener hands out its streams as wakeConns.
type wakeListener struct{ net.Listener }

func (l wakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newWakeConn(c), nil
}

// wakeConn ends a Read that waits when the read deadline moves into the
// past. Debian's hashicorp/yamux only looks at a stream's deadline when a
// Read starts (upstream wakes waiting readers since), and net/http moves
// it into the past to stop its background read when a handler hijacks
// the connection (a WebSocket upgrade): without this the upgrade would
// wait for the client's next bytes, which only come after the 101. Reads
// from the stream run in a goroutine that hands each chunk over.
type wakeConn struct {
	net.Conn
	results chan readResult
	done    chan struct{}
	once    sync.Once
	left    []byte
	err     error

	mu       sync.Mutex
	deadline time.Time
	moved    chan struct{} // closed (and replaced) when the deadline moves
}

type readResult struct {
	data []byte
	err  error
}

func newWakeConn(c net.Conn) *wakeConn {
	w := &wakeConn{Conn: c, results: make(chan readResult), done: make(chan struct{}), moved: make(chan struct{})}
	go w.pump()
	return w
}

func (c *wakeConn) pump() {
	for {
		buf := make([]byte, 32*1024)
		n, err := c.Conn.Read(buf)
		select {
		case c.results <- readResult{buf[:n], err}:
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (c *wakeConn) Read(p []byte) (int, error) {
	if len(c.left) == 0 && c.err != nil {
		return 0, c.err
	}
	if len(c.left) > 0 {
		n := copy(p, c.left)
		c.left = c.left[n:]
		return n, nil
	}
	for {
		c.mu.Lock()
		deadline, moved := c.deadline, c.moved
		c.mu.Unlock()
		var timeout <-chan time.Time
		var timer *time.Timer
		if !deadline.IsZero() {
			wait := time.Until(deadline)
			if wait <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case r := <-c.results:
			if timer != nil {
				timer.Stop()
			}
			n := copy(p, r.data)
			c.left = r.data[n:]
			if len(c.left) == 0 {
				return n, r.err
			}
			c.err = r.err
			return n, nil
		case <-moved:
			if timer != nil {
				timer.Stop()
			}
		case <-timeout:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (c *wakeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.moved)
	c.moved = make(chan struct{})
	c.mu.Unlock()
	return nil
}

func (c *wakeConn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *wakeConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}

func check(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-device: %s: %v\n", what, err)
		os.Exit(1)
	}
}

func loadKey(path string) (ed25519.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("not an Ed25519 key")
	}
	return key, nil
}

func postJSON(url string, body interface{}, out interface{}) error {
	raw, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(raw))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, answer)
	}
	return json.Unmarshal(answer, out)
}

// authenticate proves the key: sign the challenge's UTF-8 bytes, get tokens.
func authenticate(api, device string, key ed25519.PrivateKey) (string, error) {
	var challenge struct {
		Challenge string `json:"challenge"`
	}
	if err := postJSON(api+"/api/v1/auth/challenge", map[string]string{"device_id": device}, &challenge); err != nil {
		return "", err
	}
	signature := base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte(challenge.Challenge)))
	var tokens struct {
		AccessToken string `json:"access_token"`
	}
	body := map[string]string{"device_id": device, "challenge": challenge.Challenge, "signature": signature}
	if err := postJSON(api+"/api/v1/auth/verify", body, &tokens); err != nil {
		return "", err
	}
	return tokens.AccessToken, nil
}

// heartbeat sends one heartbeat over a stream the device opens.
func heartbeat(session *yamux.Session) {
	stream, err := session.Open()
	if err != nil {
		fmt.Printf("heartbeat error %v\n", err)
		return
	}
	defer stream.Close()
	client := http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: nil, Dial: func(string, string) (net.Conn, error) {
			return stream, nil
		}},
	}
	beat := `{"uptime_secs":1,"agent_version":"go-device"}`
	resp, err := client.Post("http://relay/.edgelink/v1/heartbeat", "application/json", bytes.NewBufferString(beat))
	if err != nil {
		fmt.Printf("heartbeat error %v\n", err)
		return
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	fmt.Printf("heartbeat %d %s\n", resp.StatusCode, bytes.TrimSpace(answer))
}

func routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from go")
	})
	// GET /bytes?n=N: N bytes of the pattern i % 251.
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		chunk := make([]byte, 251*256)
		for i := range chunk {
			chunk[i] = byte(i % 251)
		}
		for n > 0 {
			k := len(chunk)
			if k > n {
				k = n
			}
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	// POST /echo: the body back, streamed.
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	})
	upgrader := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			kind, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(kind, msg); err != nil {
				return
			}
		}
	})
	return mux
}

// wsConn carries a byte stream in binary WebSocket messages (net.Conn for yamux).
type wsConn struct {
	ws     *websocket.Conn
	reader io.Reader
	wmu    sync.Mutex
	mu     sync.Mutex
	code   int
	reason string
}

func newWsConn(ws *websocket.Conn) *wsConn {
	c := &wsConn{ws: ws}
	ws.SetCloseHandler(func(code int, text string) error {
		c.mu.Lock()
		c.code, c.reason = code, text
		c.mu.Unlock()
		c.wmu.Lock()
		defer c.wmu.Unlock()
		msg := websocket.FormatCloseMessage(code, "")
		return ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	})
	return c
}

func (c *wsConn) closed() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.reason
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.reader == nil {
			kind, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if kind != websocket.BinaryMessage {
				return 0, errors.New("text message on the tunnel")
			}
			c.reader = r
		}
		n, err := c.reader.Read(p)
		if err == io.EOF {
			c.reader = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetDeadline(t time.Time) error      { return c.ws.UnderlyingConn().SetDeadline(t) }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
