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
	return rawPlayOn(conn, addr, camera, 0)
}

// rawPlayOn plays camera over conn, asking for RTP on interleaved channel ch (RTCP on
// ch+1).
func rawPlayOn(conn net.Conn, addr, camera string, ch int) (net.Conn, *bufio.Reader, error) {
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
	hdr, err := do("SETUP", url+"/trackID=0", fmt.Sprintf("Transport: RTP/AVP/TCP;unicast;interleaved=%d-%d\r\n", ch, ch+1))
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
// in-process readers together), on the direct write path and on gortsplib's.
//
//	go test ./loadtest/simcam -run '^$' -bench Cameras -benchtime 5x
func BenchmarkCameras(b *testing.B) {
	for _, c := range []struct {
		n      int
		direct bool
	}{{200, true}, {200, false}, {1000, true}} {
		path := map[bool]string{true: "direct", false: "gortsplib"}[c.direct]
		b.Run(fmt.Sprintf("cameras=%d/path=%s", c.n, path), func(b *testing.B) {
			benchCameras(b, c.n, c.direct)
		})
	}
}

// BenchmarkSendFrame measures the scheduler's own cost per frame on the direct path (build
// the frame, one write syscall to one reader), without the readers: a CPU profile of it
// (-cpuprofile) shows what a frame costs the fleet.
//
//	go test ./loadtest/simcam -run '^$' -bench SendFrame -cpuprofile cpu.out
func BenchmarkSendFrame(b *testing.B) {
	s, err := New(Config{Addr: "127.0.0.1:0", Cameras: []string{"cam"}, Logger: slog.New(slog.DiscardHandler), Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	conn, br, err := rawPlay(s.Addr(), "cam")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, br) //nolint:errcheck
	for s.Stats().Readers == 0 || !(*s.cams[0].direct.Load())[0].active.Load() {
		time.Sleep(time.Millisecond)
	}
	s.cancel() // stop the scheduler: the benchmark sends the frames itself
	s.wg.Wait()
	c := s.cams[0]
	var scratch []byte
	var bytes int
	b.ResetTimer()
	for i := range b.N {
		k := uint64(i)
		s.sendFrame(c, k, time.Now(), &scratch)
		bytes += len(scratch)
	}
	b.SetBytes(int64(bytes / max(b.N, 1)))
}

func benchCameras(b *testing.B, n int, direct bool) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("cam-%04d", i)
	}
	cfg := Config{Addr: "127.0.0.1:0", Cameras: ids, Logger: slog.New(slog.DiscardHandler)}
	if !direct {
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
