package simcam

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bluenviron/gortsplib/v4"
)

// The direct write path.
//
// gortsplib's ServerStream.WritePacketRTP costs, per packet and reader: a 1472-byte
// allocation, a closure pushed into the session's ring buffer, a wake-up of the session's
// writer goroutine, a SetWriteDeadline (a runtime timer update) and one write syscall.
// At 1,000 cameras × 2 Mbit/s that is 200,000 packets a second and most of a core, a third
// of it in the garbage collector.
//
// So simcam uses gortsplib for RTSP only (DESCRIBE, SETUP, PLAY, sessions, teardown) and
// writes the media itself: the Listen hook wraps every accepted connection in a
// directConn; OnPlay registers the session's connection and interleaved channel with its
// camera (a reader); the scheduler builds each frame once per camera, as interleaved RTP
// records ('$', channel, length, 12-byte RTP header, payload) in a per-worker scratch
// buffer, and hands it to every reader's connection in one non-blocking write syscall. No
// allocation, no goroutine switch, one syscall per frame and reader. Nothing goes through
// gortsplib's stream, so its RTCP sender stays silent: simcam writes the sender reports
// itself (appendSenderReport), at a reader's first frame and every senderReportPeriod.
//
// A reader that does not keep up never blocks the scheduler: what the kernel does not take
// at once waits in the connection's pending buffer and a goroutine writes it (blocking,
// with a write timeout); frames arriving meanwhile are appended, up to a limit
// (Config.WriteQueueSize packets' worth of bytes), beyond which whole frames are dropped
// for that reader only and counted in Stats.PacketsDropped. gortsplib's own writes (RTSP
// responses) wait for pending media to leave first, so the byte stream stays in order.

const (
	// maxRTPPacket bounds one interleaved RTP record (gortsplib's MaxPacketSize default).
	maxRTPPacket = 1472
	// senderReportPeriod is how often each camera sends an RTCP sender report (gortsplib's
	// default period).
	senderReportPeriod = 10 * time.Second
	// writeTimeout bounds a blocked write to a slow reader before its connection is closed
	// (gortsplib's default WriteTimeout).
	writeTimeout = 10 * time.Second
)

// reader is one playing session of a camera, written to directly.
type reader struct {
	conn *directConn
	ch   byte // interleaved channel of RTP; RTCP uses ch+1
	sess *gortsplib.ServerSession
	// active is set once the PLAY response has been written: media must not precede it.
	active atomic.Bool
	warned atomic.Bool

	// touched only by the scheduler worker that owns the camera for a tick
	srNext  uint64 // frame index at which the next sender report is due
	started bool   // srNext is set
}

type directListener struct {
	net.Listener
}

func (l directListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newDirectConn(c), nil
}

// directConn is an accepted RTSP connection that the scheduler writes media to directly,
// beside gortsplib, which writes its responses through Write.
type directConn struct {
	net.Conn
	raw syscall.RawConn // nil when the connection has no file descriptor (tests)

	mu      sync.Mutex
	cond    sync.Cond // on mu: broadcast when writing turns false
	pending []byte    // accepted, not yet written: written by the goroutine in flight
	spare   []byte
	writing bool // a goroutine writes outside mu; everything else appends to pending
	err     error
	armed   *reader // activated by the next RTSP response written (the PLAY response)
	channel int     // interleaved RTP channel of the last SETUP response, -1 if none
	// deadline is what gortsplib asked for with SetWriteDeadline: applied to its own
	// writes only. A deadline left on the socket would fail the scheduler's non-blocking
	// writes once passed (the poller checks it before every write).
	deadline time.Time
}

// SetWriteDeadline records gortsplib's write deadline for its next Write.
func (c *directConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

// SetDeadline sets the read deadline and records the write deadline (SetWriteDeadline).
func (c *directConn) SetDeadline(t time.Time) error {
	_ = c.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func newDirectConn(c net.Conn) *directConn {
	d := &directConn{Conn: c, channel: -1}
	d.cond.L = &d.mu
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			d.raw = raw
		}
	}
	return d
}

// writeFrame writes b (whole interleaved records) without ever blocking on the peer. It
// reports dropped when the connection's backlog would exceed limit bytes: b was not sent.
func (c *directConn) writeFrame(b []byte, limit int) (dropped bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false, c.err
	}
	if c.writing {
		if len(c.pending)+len(b) > limit {
			return true, nil
		}
		c.pending = append(c.pending, b...)
		return false, nil
	}
	n, err := c.tryWrite(b)
	if err != nil {
		c.failLocked(err)
		return false, err
	}
	if n < len(b) {
		c.pending = append(c.pending[:0], b[n:]...)
		c.writing = true
		go c.drain()
	}
	return false, nil
}

// tryWrite writes what the socket takes now: one write syscall, no waiting.
func (c *directConn) tryWrite(b []byte) (int, error) {
	if c.raw == nil {
		return c.Conn.Write(b)
	}
	var n int
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for {
			m, e := syscall.Write(int(fd), b)
			if e == syscall.EINTR {
				continue
			}
			if e == syscall.EAGAIN {
				m, e = 0, nil
			}
			n, werr = max(m, 0), e
			return true // done, whether or not all of b left: never wait here
		}
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// drain writes pending until it is empty; it runs while c.writing is true.
func (c *directConn) drain() {
	c.mu.Lock()
	for c.err == nil && len(c.pending) > 0 {
		out := c.pending
		c.pending = c.spare[:0]
		c.mu.Unlock()
		_ = c.Conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := c.Conn.Write(out)
		_ = c.Conn.SetWriteDeadline(time.Time{})
		c.mu.Lock()
		if cap(out) <= 1<<20 {
			c.spare = out[:0]
		}
		if err != nil {
			c.failLocked(err)
		}
	}
	c.writing = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// waitFlushed waits until nothing accepted for the connection is left to write (or the
// connection failed, or deadline passed). It reports false when deadline passed with a
// backlog still queued.
func (c *directConn) waitFlushed(deadline time.Time) bool {
	wake := time.AfterFunc(time.Until(deadline), func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer wake.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.writing && c.err == nil && time.Now().Before(deadline) {
		c.cond.Wait()
	}
	return !c.writing || c.err != nil
}

// failLocked records a write error and closes the connection, so that gortsplib ends the
// session (as its own writer does on a write error or timeout).
func (c *directConn) failLocked(err error) {
	if c.err == nil {
		c.err = err
		_ = c.Conn.Close()
	}
	c.pending = nil
}

// Write is gortsplib's: RTSP responses (and interleaved packets, on the gortsplib path).
// It waits for pending media to leave, then writes p, blocking as a plain write would.
func (c *directConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.writing {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.writing = true
	deadline := c.deadline
	c.mu.Unlock()

	_ = c.Conn.SetWriteDeadline(deadline)
	n, err := c.Conn.Write(p)
	_ = c.Conn.SetWriteDeadline(time.Time{})

	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.failLocked(err)
	} else if len(p) > 0 && p[0] != '$' {
		c.observeResponse(p)
	}
	if c.err == nil && len(c.pending) > 0 {
		go c.drain() // media queued while p was written: c.writing stays true
		return n, err
	}
	c.writing = false
	c.cond.Broadcast()
	return n, err
}

// observeResponse activates the reader armed by OnPlay once its response has left.
func (c *directConn) observeResponse([]byte) {
	if c.armed != nil {
		c.armed.active.Store(true)
		c.armed = nil
	}
}

// arm makes r active after the next RTSP response (the PLAY response being prepared).
func (c *directConn) arm(r *reader) {
	c.mu.Lock()
	c.armed = r
	c.mu.Unlock()
}

func (c *directConn) setChannel(ch int) {
	c.mu.Lock()
	c.channel = ch
	c.mu.Unlock()
}

func (c *directConn) rtpChannel() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.channel
}

// Close closes the connection first, so that a write blocked on a slow peer returns, then
// drops what was pending.
func (c *directConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.pending = nil
	c.mu.Unlock()
	return err
}

// appendRTP appends one interleaved RTP record: '$', channel, length, the 12-byte RTP
// header (version 2, payload type 96) and payload.
func appendRTP(b []byte, ch byte, marker bool, seq uint16, ts, ssrc uint32, payload []byte) []byte {
	m := byte(96)
	if marker {
		m |= 0x80
	}
	n := 12 + len(payload)
	b = append(b, '$', ch, byte(n>>8), byte(n), 0x80, m, byte(seq>>8), byte(seq))
	b = binary.BigEndian.AppendUint32(b, ts)
	b = binary.BigEndian.AppendUint32(b, ssrc)
	return append(b, payload...)
}

// appendSenderReport appends an interleaved RTCP sender report mapping RTP time ts to
// wall-clock time ntp. The NTP timestamp is encoded as gortsplib v4 encodes and decodes it
// (seconds since 1900, then nanoseconds in the low 32 bits), so that gortsplib readers
// see the same absolute times as before simcam wrote its own reports.
func appendSenderReport(b []byte, ch byte, ssrc uint32, ntp time.Time, ts, packets, octets uint32) []byte {
	s := uint64(ntp.UnixNano()) + 2208988800*1_000_000_000
	v := (s/1_000_000_000)<<32 | (s % 1_000_000_000)
	b = append(b, '$', ch, 0, 28, 0x80, 200, 0, 6) // V=2 RC=0, PT=SR, length 6 words
	b = binary.BigEndian.AppendUint32(b, ssrc)
	b = binary.BigEndian.AppendUint64(b, v)
	b = binary.BigEndian.AppendUint32(b, ts)
	b = binary.BigEndian.AppendUint32(b, packets)
	return binary.BigEndian.AppendUint32(b, octets)
}

// setChannels rewrites the channel of every record of b (built for RTP channel from) to
// RTP channel to (RTCP records go from from+1 to to+1).
func setChannels(b []byte, from, to byte) {
	for i := 0; i+4 <= len(b); {
		if b[i+1] == from {
			b[i+1] = to
		} else {
			b[i+1] = to + 1
		}
		i += 4 + int(binary.BigEndian.Uint16(b[i+2:]))
	}
}
