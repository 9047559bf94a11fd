package simcam

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rawPlay plays camera with a minimal hand-written RTSP/TCP client and returns a reader of
// the interleaved stream, so that a benchmark measures the server, not a client library.
func rawPlay(addr, camera string) (net.Conn, *bufio.Reader, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	tp := textproto.NewReader(br)
	url := "rtsp://" + addr + "/" + camera
	cseq := 0
	do := func(method, u string, extra ...string) (textproto.MIMEHeader, error) {
		cseq++
		req := fmt.Sprintf("%s %s RTSP/1.0\r\nCSeq: %d\r\n%s\r\n", method, u, cseq, strings.Join(extra, ""))
		if _, err := io.WriteString(conn, req); err != nil {
			return nil, err
		}
		status, err := tp.ReadLine()
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(status, "RTSP/1.0 200") {
			return nil, fmt.Errorf("%s %s: %s", method, u, status)
		}
		hdr, err := tp.ReadMIMEHeader()
		if err != nil {
			return nil, err
		}
		if n, _ := strconv.Atoi(hdr.Get("Content-Length")); n > 0 {
			if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
				return nil, err
			}
		}
		return hdr, nil
	}
	fail := func(err error) (net.Conn, *bufio.Reader, error) {
		conn.Close()
		return nil, nil, err
	}
	if _, err := do("DESCRIBE", url, "Accept: application/sdp\r\n"); err != nil {
		return fail(err)
	}
	hdr, err := do("SETUP", url+"/trackID=0", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
	if err != nil {
		return fail(err)
	}
	session, _, _ := strings.Cut(hdr.Get("Session"), ";")
	if _, err := do("PLAY", url+"/", "Session: "+session+"\r\n"); err != nil {
		return fail(err)
	}
	return conn, br, nil
}

// BenchmarkCameras serves N cameras, each played by one reader over RTSP/TCP on loopback,
// for b.N seconds, and reports the process CPU per camera-second (server and the trivial
// in-process readers together), with and without write batching.
//
//	go test ./loadtest/simcam -run '^$' -bench Cameras -benchtime 5x
func BenchmarkCameras(b *testing.B) {
	for _, c := range []struct {
		n     int
		batch bool
	}{{200, true}, {200, false}, {1000, true}} {
		b.Run(fmt.Sprintf("cameras=%d/batch=%v", c.n, c.batch), func(b *testing.B) {
			benchCameras(b, c.n, c.batch)
		})
	}
}

func benchCameras(b *testing.B, n int, batch bool) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("cam-%04d", i)
	}
	cfg := Config{Addr: "127.0.0.1:0", Cameras: ids, Logger: slog.New(slog.DiscardHandler)}
	if !batch {
		cfg.FlushInterval = -1
	}
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	var received atomic.Uint64
	for _, id := range ids {
		conn, br, err := rawPlay(s.Addr(), id)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		go func() {
			buf := make([]byte, 64<<10)
			for {
				m, err := br.Read(buf)
				received.Add(uint64(m))
				if err != nil {
					return
				}
			}
		}()
	}
	for s.Stats().Readers < n {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let every reader reach steady state

	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0) //nolint:errcheck
	sent0, bytes0, t0 := s.Stats().FramesSent, received.Load(), time.Now()
	b.ResetTimer()
	for range b.N {
		time.Sleep(time.Second)
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1) //nolint:errcheck
	elapsed := time.Since(t0).Seconds()
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	camSec := float64(n) * elapsed
	st := s.Stats()
	b.ReportMetric(float64(cpu.Microseconds())/1000/camSec, "cpu-ms/cam-s")
	b.ReportMetric(float64(received.Load()-bytes0)*8/camSec/1e6, "Mbit/s/cam")
	b.ReportMetric(float64(st.FramesSent-sent0)/camSec, "frames/cam-s")
	b.ReportMetric(float64(st.FramesSkipped), "skipped")
	b.ReportMetric(0, "ns/op") // wall time per op is the sleep: meaningless
}
