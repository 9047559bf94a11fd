package simcam

import (
	"net"
	"sync"
	"time"
)

// Write batching.
//
// gortsplib writes every RTP packet of a TCP-interleaved session with its own Write call,
// i.e. its own syscall: six or so per frame per reader. The server's Listen hook lets us
// wrap each accepted connection: interleaved frames ('$'-prefixed writes) are appended to a
// per-connection buffer, and one shared flusher ticking every FlushInterval hands each
// connection that has pending bytes to a short-lived goroutine that writes them in one
// syscall. RTSP responses (anything not starting with '$') flush the buffer and are
// written through at once, in order, so the control channel is never delayed. A buffer
// that reaches flushThreshold bytes is written by the caller at once.
//
// The cost: frames leave up to FlushInterval later than their SentAt. A connection that
// blocks (slow reader) delays only its own flush goroutine and, through its mutex, its own
// gortsplib writer, exactly as an unbatched blocking write would.

const flushThreshold = 32 << 10

type batcher struct {
	interval time.Duration

	mu    sync.Mutex
	dirty []*batchConn
	spare []*batchConn

	stop chan struct{}
	done chan struct{}
}

func newBatcher(interval time.Duration) *batcher {
	b := &batcher{interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	go b.run()
	return b
}

func (b *batcher) run() {
	defer close(b.done)
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		d := b.dirty
		b.dirty = b.spare[:0]
		b.mu.Unlock()
		for i, c := range d {
			go c.flushQueued()
			d[i] = nil
		}
		b.mu.Lock()
		b.spare = d[:0]
		b.mu.Unlock()
	}
}

func (b *batcher) close() {
	close(b.stop)
	<-b.done
}

func (b *batcher) enqueue(c *batchConn) {
	b.mu.Lock()
	b.dirty = append(b.dirty, c)
	b.mu.Unlock()
}

type batchListener struct {
	net.Listener
	b *batcher
}

func (l *batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c, b: l.b}, nil
}

type batchConn struct {
	net.Conn
	b *batcher

	mu     sync.Mutex // guards everything below and serialises writes to Conn
	buf    []byte
	queued bool // in b.dirty, or a flush goroutine is about to run
	err    error
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 || p[0] != '$' || len(c.buf)+len(p) >= flushThreshold {
		// control message, or a full buffer: write everything now, in order.
		if len(c.buf) > 0 {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
		n, err := c.Conn.Write(p)
		if err != nil {
			c.err = err
		}
		return n, err
	}
	c.buf = append(c.buf, p...)
	if !c.queued {
		c.queued = true
		c.b.enqueue(c)
	}
	return len(p), nil
}

func (c *batchConn) flushQueued() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queued = false
	if c.err == nil && len(c.buf) > 0 {
		c.flushLocked() //nolint:errcheck // kept in c.err, returned by the next Write
	}
}

func (c *batchConn) flushLocked() error {
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 2*flushThreshold {
		c.buf = nil // an oversized burst: let it go
	} else {
		c.buf = c.buf[:0]
	}
	if err != nil {
		c.err = err
	}
	return err
}

// Close closes the connection first, so that a flush blocked on a slow peer returns, then
// drops what was pending.
func (c *batchConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.buf = nil
	c.mu.Unlock()
	return err
}
