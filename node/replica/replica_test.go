package replica

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

func TestStreamToReplicas(t *testing.T) {
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d-replicas", k), func(t *testing.T) {
			var reps []*replicaNode
			var ids []model.NodeID
			for i := range k {
				n := newReplicaNode(t, model.NodeID(fmt.Sprintf("node-%d", i+2)))
				reps = append(reps, n)
				ids = append(ids, n.id)
			}
			o := newOwner(t, reps...)
			rec := o.start(t, ids...)
			for range 6 {
				rec.append(t)
			}
			if a, w := rec.st.Replicated(); a != k || w != k {
				t.Fatalf("Replicated() = %d/%d, want %d/%d", a, w, k, k)
			}
			// Readable on every replica while the segment is open, byte for byte.
			for _, n := range reps {
				seg, err := n.r.Store().Segment(rec.w.ID())
				if err != nil {
					t.Fatal(err)
				}
				if seg.Sealed || seg.Fragments != 6 || seg.Node != n.id {
					t.Fatalf("open replica segment on %s: %+v", n.id, seg)
				}
				sameSegment(t, o.store, n.r.Store(), rec.w.ID())
			}
			ownSeg, err := rec.w.Seal()
			if err != nil {
				t.Fatal(err)
			}
			if err := rec.st.Seal(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, n := range reps {
				seg, err := n.r.Store().Segment(rec.w.ID())
				if err != nil {
					t.Fatal(err)
				}
				if !seg.Sealed || seg.Checksum != ownSeg.Checksum || seg.Bytes != ownSeg.Bytes || !seg.End.Equal(ownSeg.End) {
					t.Fatalf("sealed replica on %s = %+v, owner's %+v", n.id, seg, ownSeg)
				}
				if err := n.r.Store().Verify(seg.ID); err != nil {
					t.Fatal(err)
				}
				m := n.r.Metrics()
				if m.Fragments != 6 || m.Open != 0 {
					t.Fatalf("receiver metrics %+v", m)
				}
			}
			if m := o.sender.Metrics(); m.Fragments != int64(6*k) || m.Failures != 0 {
				t.Fatalf("sender metrics %+v", m)
			}
			if err := rec.st.Append(context.Background(), fragment(9)); !errors.Is(err, ErrStreamClosed) {
				t.Fatalf("Append after Seal = %v, want ErrStreamClosed", err)
			}
		})
	}
}

func TestReplicaDownDoesNotStopRecording(t *testing.T) {
	for _, mode := range []string{"refused", "hung"} {
		t.Run(mode, func(t *testing.T) {
			n := newReplicaNode(t, "node-2")
			o := newOwner(t, n)
			o.sender.cfg.Source = nil // no catch-up: the replica stays out
			switch mode {
			case "refused":
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := ln.Addr().String()
				ln.Close()
				o.addrs.Store(n.id, addr)
			case "hung":
				n.hang.Store(true)
			}
			rec := o.start(t, n.id)
			for range 4 {
				start := time.Now()
				rec.append(t)
				if d := time.Since(start); d > 10*o.sender.cfg.Timeout {
					t.Fatalf("Append took %s with a %s timeout", d, o.sender.cfg.Timeout)
				}
			}
			if a, w := rec.st.Replicated(); a != 0 || w != 1 {
				t.Fatalf("Replicated() = %d/%d, want 0/1", a, w)
			}
			if m := o.sender.Metrics(); m.Failures != 1 || m.Fragments != 0 {
				t.Fatalf("sender metrics %+v: want the replica failed once", m)
			}
			if seg := rec.w.Info(); seg.Fragments != 4 {
				t.Fatalf("owner recorded %d fragments, want 4", seg.Fragments)
			}
			// The next segment does not wait for the failed replica: it is created there in
			// the background, and joins the stream once the replica answers again.
			next, err := o.sender.Open(context.Background(), "cam-1", 1, t0.Add(time.Hour), testInit, []model.NodeID{n.id})
			if err != nil {
				t.Fatal(err)
			}
			defer next.Close()
			if a, w := next.Replicated(); a != 0 || w != 1 {
				t.Fatalf("next stream Replicated() = %d/%d, want 0/1", a, w)
			}
			if m := o.sender.Metrics(); m.Failures != 1 {
				t.Fatalf("the next stream waited for the failed replica: failures %d", m.Failures)
			}
			n.hang.Store(false)
			o.addrs.Store(n.id, n.addr())
			eventually(t, "the replica to join the next stream", func() bool { a, _ := next.Replicated(); return a == 1 })
		})
	}
}

func TestLateReplicaIsCaughtUp(t *testing.T) {
	n := newReplicaNode(t, "node-2")
	n.down.Store(true)
	o := newOwner(t, n)
	rec := o.start(t, n.id)
	for range 3 {
		rec.append(t)
	}
	if a, _ := rec.st.Replicated(); a != 0 {
		t.Fatalf("replica down, yet Replicated() acked = %d", a)
	}
	n.down.Store(false)
	eventually(t, "the replica to be caught up", func() bool { a, _ := rec.st.Replicated(); return a == 1 })
	for range 3 {
		rec.append(t)
	}
	sameSegment(t, o.store, n.r.Store(), rec.w.ID())
	if _, err := rec.w.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := rec.st.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
	sameSegment(t, o.store, n.r.Store(), rec.w.ID())
	if m := o.sender.Metrics(); m.Rejoins != 1 || m.Failures != 1 {
		t.Fatalf("sender metrics %+v, want 1 failure and 1 rejoin", m)
	}
}

func TestReplicaRestartIsRefilled(t *testing.T) {
	n := newReplicaNode(t, "node-2")
	o := newOwner(t, n)
	rec := o.start(t, n.id)
	for range 3 {
		rec.append(t)
	}
	// The replica restarts: its startup check seals the segment it was receiving.
	n.r.Close()
	n.open(t)
	seg, err := n.r.Store().Segment(rec.w.ID())
	if err != nil || !seg.Sealed || seg.Fragments != 3 {
		t.Fatalf("after restart the replica holds %+v, %v", seg, err)
	}
	rec.append(t) // refused (sealed): the replica leaves the stream and is refilled
	eventually(t, "the replica to be refilled", func() bool { a, _ := rec.st.Replicated(); return a == 1 })
	rec.append(t)
	sameSegment(t, o.store, n.r.Store(), rec.w.ID())
}

func TestSetReplicasAddsAndRemoves(t *testing.T) {
	a, b := newReplicaNode(t, "node-a"), newReplicaNode(t, "node-b")
	o := newOwner(t, a, b)
	rec := o.start(t, a.id)
	for range 2 {
		rec.append(t)
	}
	rec.st.SetReplicas([]model.NodeID{b.id})
	eventually(t, "the new replica to be caught up", func() bool { ack, want := rec.st.Replicated(); return ack == 1 && want == 1 })
	rec.append(t)
	sameSegment(t, o.store, b.r.Store(), rec.w.ID())
	eventually(t, "the removed replica's copy to be dropped", func() bool {
		_, err := a.r.Store().Segment(rec.w.ID())
		return errors.Is(err, model.ErrNotFound)
	})
}

// truncatedAppend sends an append whose body stops halfway, then closes the connection:
// the owner crashed while the fragment was in flight.
func truncatedAppend(t *testing.T, addr string, id model.SegmentID, seq int, f model.Fragment) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST %s/segments/%s/fragments HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s: %d\r\n%s: %d\r\n%s: %d\r\n%s: %s\r\n\r\n",
		PathPrefix, id, len(f.Data), HeaderSeq, seq, HeaderStart, f.Start.UnixNano(), HeaderDuration, f.Duration,
		HeaderCRC, formatCRC(crc32c(f.Data)))
	c.Write(f.Data[:len(f.Data)/2])
	c.Close()
}

func TestOwnerCrashOrphans(t *testing.T) {
	n := newReplicaNode(t, "node-2")
	o := newOwner(t, n)
	rec := o.start(t, n.id)
	for range 4 {
		rec.append(t)
	}
	// The owner dies while sending fragment 4.
	truncatedAppend(t, n.addr(), rec.w.ID(), 4, fragment(4))
	rec.st.Close()

	if segs, err := n.r.Orphans(func(model.CameraID, model.NodeID) bool { return true }); err != nil || len(segs) != 0 {
		t.Fatalf("Orphans with a live owner = %v, %v; want none", segs, err)
	}
	var asked []model.NodeID
	segs, err := n.r.Orphans(func(_ model.CameraID, owner model.NodeID) bool { asked = append(asked, owner); return false })
	if err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 || asked[0] != "owner" {
		t.Fatalf("isOwnerAlive asked about %v, want [owner]", asked)
	}
	if len(segs) != 1 {
		t.Fatalf("Orphans = %d segments, want 1", len(segs))
	}
	seg := segs[0]
	if seg.ID != rec.w.ID() || !seg.Sealed || seg.Fragments != 4 || seg.Node != n.id || seg.Camera != "cam-1" || seg.Epoch != 1 {
		t.Fatalf("orphan = %+v", seg)
	}
	if want := fragment(3).Start.Add(time.Second); !seg.End.Equal(want) {
		t.Fatalf("orphan ends at %s, want %s (end of the last acknowledged fragment)", seg.End, want)
	}
	// Every acknowledged fragment is there, byte for byte: the owner's copy is the reference.
	sameSegment(t, o.store, n.r.Store(), seg.ID)
	if err := n.r.Store().Verify(seg.ID); err != nil {
		t.Fatal(err)
	}
	if again, _ := n.r.Orphans(func(model.CameraID, model.NodeID) bool { return false }); len(again) != 0 {
		t.Fatalf("second Orphans returned %d segments, want none (already adopted)", len(again))
	}
	held, err := n.r.Held()
	if err != nil || len(held) != 1 || !held[0].Adopted || held[0].Owner != "owner" {
		t.Fatalf("Held() = %+v, %v", held, err)
	}
	// The owner, back from the dead, cannot drop what this node adopted; the node can.
	if code, st := (client{t, n.addr()}).do("DELETE", "/segments/"+string(seg.ID), nil, nil); code != http.StatusConflict || st.Code != codeAdopted {
		t.Fatalf("DELETE of an adopted segment: %d %+v, want 409 adopted", code, st)
	}
	if err := n.r.Drop(seg.ID); err != nil {
		t.Fatal(err)
	}
	if held, _ := n.r.Held(); len(held) != 0 {
		t.Fatalf("Held() after Drop = %+v", held)
	}
}

func TestOrphansAfterReplicaRestart(t *testing.T) {
	n := newReplicaNode(t, "node-2")
	o := newOwner(t, n)
	rec := o.start(t, n.id)
	for range 3 {
		rec.append(t)
	}
	rec.st.Close()
	// Both die; the replica comes back first: its owner is still known.
	n.r.Close()
	n.open(t)
	segs, err := n.r.Orphans(func(_ model.CameraID, owner model.NodeID) bool { return owner != "owner" })
	if err != nil || len(segs) != 1 || segs[0].Fragments != 3 || !segs[0].Sealed {
		t.Fatalf("Orphans after restart = %+v, %v", segs, err)
	}
	// An empty open replica segment is dropped, not adopted.
	empty, err := o.sender.Open(context.Background(), "cam-2", 1, t0, testInit, []model.NodeID{n.id})
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if segs, err := n.r.Orphans(func(model.CameraID, model.NodeID) bool { return false }); err != nil || len(segs) != 0 {
		t.Fatalf("Orphans with an empty segment = %+v, %v", segs, err)
	}
	if _, err := n.r.Store().Segment(empty.ID()); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("empty orphan still held: %v", err)
	}
}

func TestSealIdle(t *testing.T) {
	n := newReplicaNode(t, "node-2")
	o := newOwner(t, n)
	rec := o.start(t, n.id)
	rec.append(t)
	if c, err := n.r.SealIdle(time.Hour); err != nil || c != 0 {
		t.Fatalf("SealIdle(1h) = %d, %v", c, err)
	}
	if c, err := n.r.SealIdle(0); err != nil || c != 1 {
		t.Fatalf("SealIdle(0) = %d, %v", c, err)
	}
	if seg, _ := n.r.Store().Segment(rec.w.ID()); !seg.Sealed || seg.Fragments != 1 {
		t.Fatalf("idle segment = %+v", seg)
	}
}

// client is a raw client of a receiver's endpoints.
type client struct {
	t    *testing.T
	addr string
}

func (c client) do(method, path string, h map[string]string, body []byte) (int, status) {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+c.addr+PathPrefix+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		c.t.Fatalf("%s %s: undecodable answer: %v", method, path, err)
	}
	return resp.StatusCode, st
}

func fragHeaders(seq int, f model.Fragment) map[string]string {
	kf := "0"
	if f.Keyframe {
		kf = "1"
	}
	return map[string]string{
		HeaderSeq: strconv.Itoa(seq), HeaderStart: strconv.FormatInt(f.Start.UnixNano(), 10),
		HeaderDuration: strconv.FormatInt(int64(f.Duration), 10), HeaderKeyframe: kf, HeaderCRC: formatCRC(crc32c(f.Data)),
	}
}

func createHeaders(owner string, init []byte) map[string]string {
	return map[string]string{HeaderOwner: owner, HeaderCRC: formatCRC(crc32c(init))}
}

func TestRetryIsIdempotent(t *testing.T) {
	n := newReplicaNode(t, "node-2")
	c := client{t, n.addr()}
	id, _ := storage.NewSegmentID("cam-1", 1, t0)
	seg := "/segments/" + string(id)
	if code, st := c.do("PUT", seg, createHeaders("owner", testInit), testInit); code != http.StatusCreated {
		t.Fatalf("create: %d %+v", code, st)
	}
	// A retried create (the answer was lost) is acknowledged with what is held.
	if code, st := c.do("PUT", seg, createHeaders("owner", testInit), testInit); code != http.StatusOK || !st.Duplicate || st.Fragments != 0 {
		t.Fatalf("create again: %d %+v", code, st)
	}
	f0 := fragment(0)
	for i := range 3 {
		code, st := c.do("POST", seg+"/fragments", fragHeaders(0, f0), f0.Data)
		if code != http.StatusOK || st.Fragments != 1 || st.Duplicate != (i > 0) {
			t.Fatalf("append #%d of fragment 0: %d %+v", i+1, code, st)
		}
	}
	if m := n.r.Metrics(); m.Fragments != 1 || m.Duplicates != 2 {
		t.Fatalf("metrics %+v: want 1 fragment written, 2 duplicates", m)
	}
	_, idx := segmentBytes(t, n.r.Store(), id)
	if len(idx) != 1 {
		t.Fatalf("replica holds %d fragments after retries, want 1", len(idx))
	}
}

func TestBadRequestsChangeNothing(t *testing.T) {
	n := newReplicaNode(t, "node-2")
	c := client{t, n.addr()}
	id, _ := storage.NewSegmentID("cam-1", 2, t0)
	seg := "/segments/" + string(id)
	if code, st := c.do("PUT", seg, createHeaders("owner", testInit), testInit); code != http.StatusCreated {
		t.Fatalf("create: %d %+v", code, st)
	}
	f0, f1 := fragment(0), fragment(1)
	if code, st := c.do("POST", seg+"/fragments", fragHeaders(0, f0), f0.Data); code != http.StatusOK {
		t.Fatalf("append: %d %+v", code, st)
	}
	before, _ := segmentBytes(t, n.r.Store(), id)
	unknown, _ := storage.NewSegmentID("cam-9", 2, t0)
	stale, _ := storage.NewSegmentID("cam-1", 1, t0.Add(time.Hour))
	with := func(h map[string]string, k, v string) map[string]string {
		out := map[string]string{}
		for a, b := range h {
			out[a] = b
		}
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	h1 := fragHeaders(1, f1)
	cases := []struct {
		name, method, path string
		h                  map[string]string
		body               []byte
		status             int
		code, msg          string
	}{
		{"unknown segment", "POST", "/segments/" + string(unknown) + "/fragments", h1, f1.Data, 404, codeNotFound, "not open here"},
		{"malformed segment id", "POST", "/segments/cam-1.xyz.2/fragments", h1, f1.Data, 400, codeInvalid, "segment id"},
		{"seq not a number", "POST", seg + "/fragments", with(h1, HeaderSeq, "one"), f1.Data, 400, codeInvalid, HeaderSeq},
		{"start missing", "POST", seg + "/fragments", with(h1, HeaderStart, ""), f1.Data, 400, codeInvalid, HeaderStart + ": is required"},
		{"negative duration", "POST", seg + "/fragments", with(h1, HeaderDuration, "-5"), f1.Data, 400, codeInvalid, HeaderDuration},
		{"bad keyframe", "POST", seg + "/fragments", with(h1, HeaderKeyframe, "yes"), f1.Data, 400, codeInvalid, HeaderKeyframe},
		{"bad crc", "POST", seg + "/fragments", with(h1, HeaderCRC, "zz"), f1.Data, 400, codeInvalid, HeaderCRC},
		{"damaged body", "POST", seg + "/fragments", with(h1, HeaderCRC, formatCRC(crc32c(f1.Data)^1)), f1.Data, 400, codeInvalid, "damaged in transit"},
		{"empty body", "POST", seg + "/fragments", h1, nil, 400, codeInvalid, "empty"},
		{"gap", "POST", seg + "/fragments", with(h1, HeaderSeq, "5"), f1.Data, 409, codeGap, "only 1 are here"},
		{"other content at a held position", "POST", seg + "/fragments", fragHeaders(0, f1), f1.Data, 409, codeConflict, "other content"},
		{"fragment before the previous one", "POST", seg + "/fragments", with(h1, HeaderStart, strconv.FormatInt(t0.UnixNano()-1, 10)), f1.Data, 400, codeInvalid, "start"},
		{"stale epoch", "PUT", "/segments/" + string(stale), createHeaders("owner", testInit), testInit, 409, codeStaleEpoch, "stale epoch"},
		{"owner is the replica", "PUT", "/segments/" + string(unknown), createHeaders("node-2", testInit), testInit, 400, codeInvalid, "replicate to itself"},
		{"owner missing", "PUT", "/segments/" + string(unknown), createHeaders("", testInit), testInit, 400, codeInvalid, HeaderOwner},
		{"init missing", "PUT", "/segments/" + string(unknown), createHeaders("owner", testInit), nil, 400, codeInvalid, "init section is required"},
		{"different init for an open segment", "PUT", seg, createHeaders("owner", testInit[1:]), testInit[1:], 409, codeConflict, "different init"},
		{"seal unknown", "POST", "/segments/" + string(unknown) + "/seal", nil, nil, 404, codeNotFound, "not found"},
		{"drop unknown", "DELETE", "/segments/" + string(unknown), nil, nil, 404, codeNotFound, "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, st := client{t, n.addr()}.do(tc.method, tc.path, tc.h, tc.body)
			if code != tc.status || st.Code != tc.code || !strings.Contains(st.Error, tc.msg) {
				t.Fatalf("got %d %q %q, want %d %q containing %q", code, st.Code, st.Error, tc.status, tc.code, tc.msg)
			}
		})
	}
	after, idx := segmentBytes(t, n.r.Store(), id)
	if !bytes.Equal(before, after) || len(idx) != 1 {
		t.Fatalf("bad requests changed the replica: %d fragments, bytes equal %v", len(idx), bytes.Equal(before, after))
	}
	all, _ := n.r.Store().All()
	if len(all) != 1 {
		t.Fatalf("bad requests created segments: %+v", all)
	}
}

func TestTruncatedBodyChangesNothing(t *testing.T) {
	n := newReplicaNode(t, "node-2")
	o := newOwner(t, n)
	rec := o.start(t, n.id)
	rec.append(t)
	truncatedAppend(t, n.addr(), rec.w.ID(), 1, fragment(1))
	// The receiver may still be reading the cut body; a later complete send succeeds.
	rec.append(t)
	if a, _ := rec.st.Replicated(); a != 1 {
		t.Fatalf("Replicated acked = %d after a truncated request, want 1", a)
	}
	sameSegment(t, o.store, n.r.Store(), rec.w.ID())
}

func TestConfigValidate(t *testing.T) {
	err := Config{MaxFragmentBytes: -1}.Validate()
	for _, want := range []string{"replica.dir", "replica.node_id", "replica.max_fragment_bytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Config.Validate() = %v, want it to name %s", err, want)
		}
	}
	err = SenderConfig{}.Validate()
	for _, want := range []string{"replica.node_id", "replica.resolve", "replica.timeout", "replica.retry_interval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("SenderConfig.Validate() = %v, want it to name %s", err, want)
		}
	}
	if !errors.Is(err, model.ErrInvalid) {
		t.Errorf("Validate error does not wrap model.ErrInvalid")
	}
}

func FuzzParseFragmentHeader(f *testing.F) {
	f.Add("0", "1741944413123456789", "1000000000", "1", "0a1b2c3d", int64(100))
	f.Add("-1", "0", "x", "2", "", int64(-1))
	f.Add("99999999999", "9223372036854775807", "3600000000001", "", "ffffffff", int64(1<<40))
	f.Fuzz(func(t *testing.T, seq, start, dur, kf, crc string, cl int64) {
		h := http.Header{}
		for k, v := range map[string]string{HeaderSeq: seq, HeaderStart: start, HeaderDuration: dur, HeaderKeyframe: kf, HeaderCRC: crc} {
			h.Set(k, v)
		}
		fh, err := parseFragmentHeader(h, cl, 1<<20)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("error %v does not wrap model.ErrInvalid", err)
			}
			return
		}
		if fh.seq < 0 || fh.start.UnixNano() <= 0 || fh.duration < 0 || fh.duration > maxDuration || fh.size <= 0 || fh.size > 1<<20 {
			t.Fatalf("accepted out-of-range header: %+v", fh)
		}
	})
}
