package simcam

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/loadtest/sei"
)

// record is one interleaved frame of an RTSP/TCP stream.
type record struct {
	ch      byte
	payload []byte
}

func readRecord(br *bufio.Reader) (record, error) {
	var h [4]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return record{}, err
	}
	if h[0] != '$' {
		return record{}, io.ErrUnexpectedEOF
	}
	p := make([]byte, binary.BigEndian.Uint16(h[2:]))
	_, err := io.ReadFull(br, p)
	return record{ch: h[1], payload: p}, err
}

// setupH264 starts a gortsplib client over TCP (dial: its DialContext, nil for the
// default), DESCRIBEs url and SETUPs its H.264 media; the caller registers OnPacketRTP,
// then PLAYs. The client is closed when the test ends.
func setupH264(t *testing.T, url string, dial func(ctx context.Context, network, address string) (net.Conn, error)) (*gortsplib.Client, *description.Media, *format.H264, *rtph264.Decoder) {
	t.Helper()
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp, DialContext: dial}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	var f *format.H264
	medi := desc.FindFormat(&f)
	if medi == nil {
		t.Fatalf("no H.264 media in %+v", desc)
	}
	dec, err := f.CreateDecoder()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		t.Fatal(err)
	}
	return c, medi, f, dec
}

// A gortsplib reader maps RTP time to absolute time with the sender reports simcam writes
// itself on the direct path: the time it gets for a frame is that frame's schedule, at
// most a few milliseconds before the send time in its tag.
func TestSenderReportsGiveAbsoluteTime(t *testing.T) {
	s := startServer(t, Config{Cameras: []string{"ntp"}})
	c, medi, f, dec := setupH264(t, s.URL("ntp"), nil)
	var mu sync.Mutex
	var checked, noNTP int
	var worst time.Duration
	c.OnPacketRTP(medi, f, func(pkt *rtp.Packet) {
		au, err := dec.Decode(pkt)
		if err != nil {
			return
		}
		tags := sei.ScanAU(au, false)
		ntp, ok := c.PacketNTP(medi, pkt)
		mu.Lock()
		defer mu.Unlock()
		if !ok {
			noNTP++
			return
		}
		if len(tags) == 1 {
			want, _ := s.FrameTime("ntp", tags[0].Frame)
			worst = max(worst, ntp.Sub(want).Abs())
			checked++
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if checked < 15 {
		t.Fatalf("%d frames with an absolute time (%d without): want a sender report before the first frames", checked, noNTP)
	}
	if worst > time.Millisecond {
		t.Errorf("absolute time of a frame off its schedule by up to %v, want exact (< 1 ms)", worst)
	}
}

// Two readers of one camera, on different interleaved channels, get the same packets, each
// on its own channels, with a sender report on channel+1 at their first frame.
func TestReadersOnOtherChannels(t *testing.T) {
	s := startServer(t, Config{Cameras: []string{"multi"}})
	type got struct {
		seqs     []uint16
		badChans int
		srs      int
	}
	results := make([]got, 2)
	var wg sync.WaitGroup
	for i, ch := range []int{0, 6} {
		conn, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, br, err := rawPlayOn(conn, s.Addr(), "multi", ch)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			conn.SetReadDeadline(time.Now().Add(time.Second)) //nolint:errcheck
			g := &results[i]
			for {
				r, err := readRecord(br)
				if err != nil {
					return
				}
				switch int(r.ch) {
				case ch:
					var p rtp.Packet
					if p.Unmarshal(r.payload) == nil {
						g.seqs = append(g.seqs, p.SequenceNumber)
					}
				case ch + 1:
					if pkts, err := rtcp.Unmarshal(r.payload); err == nil {
						if _, ok := pkts[0].(*rtcp.SenderReport); ok {
							g.srs++
						}
					}
				default:
					g.badChans++
				}
			}
		})
	}
	wg.Wait()
	for i, g := range results {
		if len(g.seqs) < 50 || g.badChans > 0 || g.srs < 1 {
			t.Errorf("reader %d: %d RTP packets, %d records on foreign channels, %d sender reports; want many, 0, at least 1", i, len(g.seqs), g.badChans, g.srs)
		}
		for j := 1; j < len(g.seqs); j++ {
			if g.seqs[j] != g.seqs[j-1]+1 {
				t.Fatalf("reader %d: sequence %d after %d", i, g.seqs[j], g.seqs[j-1])
			}
		}
	}
	// Both see the same numbering: the second reader's packets are a part of the first's.
	if a, b := results[0].seqs, results[1].seqs; len(a) > 0 && len(b) > 0 {
		in := func(x uint16) bool {
			for _, y := range a {
				if y == x {
					return true
				}
			}
			return false
		}
		if !in(b[len(b)/2]) {
			t.Errorf("reader 1's packet %d was not sent to reader 0", b[len(b)/2])
		}
	}
}

// A reader that stops reading loses whole frames, counted in PacketsDropped, and does not
// slow anyone else: another camera's reader gets every frame, on time.
func TestSlowReaderDropsOnlyItsFrames(t *testing.T) {
	s := startServer(t, Config{Cameras: []string{"slow", "fast"}, WriteQueueSize: 16})
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	slow, err := d.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, _, err := rawPlayOn(slow, s.Addr(), "slow", 0); err != nil {
		t.Fatal(err)
	}
	// Shrink the server side's send buffer too, so that the backlog builds in simcam.
	for s.cams[0].direct.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	if tc, ok := (*s.cams[0].direct.Load())[0].conn.Conn.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	frames := make(chan []frame)
	go func() { frames <- readCamera(t, s.URL("fast"), 1500*time.Millisecond) }()
	got := <-frames
	checkConsecutive(t, got, "fast")
	st := s.Stats()
	if st.PacketsDropped == 0 {
		t.Errorf("a reader that never reads: 0 packets dropped, want its frames dropped")
	}
	// The scheduler was not held up by the slow reader: both cameras sent as many frames.
	if a, b := s.FramesSent("slow"), s.FramesSent("fast"); a+1 < b || b+1 < a {
		t.Errorf("frames sent: slow camera %d, fast camera %d; want the same", a, b)
	}
	if st.FramesSkipped != 0 {
		t.Errorf("%d frames skipped", st.FramesSkipped)
	}
}

// The gortsplib write path (FlushInterval < 0), kept for comparison, still streams.
func TestGortsplibPathStreams(t *testing.T) {
	s := startServer(t, Config{Cameras: []string{"old"}, FlushInterval: -1})
	checkConsecutive(t, readCamera(t, s.URL("old"), 1500*time.Millisecond), "old")
}

// Frames and gortsplib's writes leave in order, and a write deadline gortsplib set for a
// response (long passed by the next frame) does not fail the scheduler's writes.
func TestDirectConnOrderAndDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sc, err := directListener{ln}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	dc := sc.(*directConn)
	defer dc.Close()
	if dc.raw == nil {
		t.Fatal("no raw connection: the non-blocking path is not exercised")
	}
	_ = dc.SetWriteDeadline(time.Now().Add(time.Millisecond))
	if _, err := dc.Write([]byte("RTSP/1.0 200 OK\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // the response's deadline has passed
	frame := appendRTP(nil, 0, true, 7, 3600, 42, []byte("payload"))
	if dropped, err := dc.writeFrame(frame, 1<<20); dropped || err != nil {
		t.Fatalf("writeFrame after a passed deadline: dropped %v, %v", dropped, err)
	}
	_ = dc.SetWriteDeadline(time.Now().Add(time.Second)) // as gortsplib does before each write
	if _, err := dc.Write([]byte("RTSP/1.0 200 OK\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte("RTSP/1.0 200 OK\r\n\r\n"), frame...), "RTSP/1.0 200 OK\r\n\r\n"...)
	got := make([]byte, len(want))
	client.SetReadDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("peer read %q, want %q", got, want)
	}
}

// Every frame counted as sent reaches a reader that is behind when the server closes: Close
// writes out the reader's backlog before the connection goes.
func TestCloseDeliversQueuedFrames(t *testing.T) {
	s := startServer(t, Config{Cameras: []string{"behind"}})
	smallBuffers := func(ctx context.Context, network, address string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
		}}
		return d.DialContext(ctx, network, address)
	}
	c, medi, h264f, dec := setupH264(t, s.URL("behind"), smallBuffers)
	var mu sync.Mutex
	var got []uint64
	first := make(chan struct{})
	c.OnPacketRTP(medi, h264f, func(pkt *rtp.Packet) {
		au, err := dec.Decode(pkt)
		if err != nil {
			return
		}
		mu.Lock()
		for _, tag := range sei.ScanAU(au, false) {
			got = append(got, tag.Frame)
		}
		n := len(got)
		mu.Unlock()
		if n == 1 {
			close(first)
			time.Sleep(800 * time.Millisecond) // fall behind: the backlog builds in simcam
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	<-first
	for s.cams[0].direct.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	if tc, ok := (*s.cams[0].direct.Load())[0].conn.Conn.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	time.Sleep(400 * time.Millisecond)
	s.Close()
	sent := s.FramesSent("behind")
	// The client reads what is left, then sees the connection end.
	_ = c.Wait()
	mu.Lock()
	defer mu.Unlock()
	if st := s.Stats(); st.PacketsDropped != 0 {
		t.Fatalf("%d packets dropped for the reader: the queue was too small for this test", st.PacketsDropped)
	}
	if len(got) == 0 || got[len(got)-1]+1 != sent {
		last := uint64(0)
		if len(got) > 0 {
			last = got[len(got)-1]
		}
		t.Fatalf("the camera sent frames up to %d, the reader got %d frames up to %d: frames counted as sent were never delivered", sent-1, len(got), last)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("frame %d after %d", got[i], got[i-1])
		}
	}
}
