package testutil

import (
	"net"
	"testing"
)

// ReplyProxy is a TCP proxy to a Redis server that passes every chunk of Redis's replies through
// a hook before it forwards it, so that tests can lose or hold back an answer after Redis has acted
// on the command: what a flaky network or a stalled client does.
type ReplyProxy struct {
	ln net.Listener
}

// NewReplyProxy starts a proxy to addr, closed when t ends. onReply runs in the goroutine that
// forwards one connection's replies, before each chunk read from Redis; the chunk is dropped when it
// returns false. Sleeping in it holds the reply back.
func NewReplyProxy(t testing.TB, addr string, onReply func(chunk []byte) (forward bool)) *ReplyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go pipe(s, c, func([]byte) bool { return true })
			go pipe(c, s, onReply)
		}
	}()
	return &ReplyProxy{ln: ln}
}

// Addr is the address to connect to instead of Redis's.
func (p *ReplyProxy) Addr() string { return p.ln.Addr().String() }

// pipe copies from into to, chunk by chunk as keep says, until either side fails, then closes to.
func pipe(to, from net.Conn, keep func([]byte) bool) {
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && keep(buf[:n]) {
			if _, err := to.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
