package storage

import (
	"bytes"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

func TestRoundTripAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	w1, frags1 := record(t, s, "cam-1", 1, t0, 5)
	seg1, err := w1.Seal()
	if err != nil {
		t.Fatal(err)
	}
	w2, frags2 := record(t, s, "cam-1", 1, t0.Add(10*time.Second), 3)
	open2 := w2.Info()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	rep := s.RecoveryReport()
	if rep.Checked != 2 || len(rep.Segments) != 1 || !rep.Segments[0].Sealed || rep.Segments[0].Segment != w2.ID() ||
		rep.Segments[0].TruncatedBytes != 0 || rep.Segments[0].DroppedFragments != 0 {
		t.Fatalf("report after reopen with one open segment: %s", rep)
	}
	checkFragments(t, s, seg1.ID, frags1)
	checkFragments(t, s, w2.ID(), frags2)

	got1, err := s.Segment(seg1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got1 != seg1 {
		t.Errorf("Segment after reopen = %+v, want %+v", got1, seg1)
	}
	want1 := model.Segment{ID: model.SegmentID(fmt.Sprintf("cam-1.%016x.1", t0.UnixNano())), Camera: "cam-1", Epoch: 1, Node: "node-a",
		Start: t0, End: t0.Add(5 * time.Second), Fragments: 5, Sealed: true}
	if seg1.ID != want1.ID || !seg1.Start.Equal(want1.Start) || !seg1.End.Equal(want1.End) || seg1.Fragments != 5 ||
		seg1.Node != "node-a" || seg1.Epoch != 1 || !seg1.Sealed || len(seg1.CodecHash) != 16 {
		t.Errorf("sealed segment = %+v, want like %+v", seg1, want1)
	}
	got2, _ := s.Segment(w2.ID())
	if !got2.Sealed || got2.Bytes != open2.Bytes || !got2.End.Equal(open2.End) || got2.Fragments != 3 || got2.CodecHash != seg1.CodecHash {
		t.Errorf("segment sealed by recovery = %+v, open it was %+v", got2, open2)
	}

	// The file is exactly init + fragments (it will be a data shard as is), and the
	// segment's checksum is the CRC-32C of the whole file.
	for _, c := range []struct {
		seg   model.Segment
		frags []model.Fragment
	}{{seg1, frags1}, {got2, frags2}} {
		file, err := os.ReadFile(filepath.Join(dir, "segments", "cam-1", string(c.seg.ID)+".seg"))
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(testInit)
		for _, f := range c.frags {
			want = append(want, f.Data...)
		}
		if !bytes.Equal(file, want) {
			t.Errorf("%s: file is not init followed by the fragments", c.seg.ID)
		}
		if c.seg.Checksum != crc32c(file) || int64(len(file)) != c.seg.Bytes {
			t.Errorf("%s: checksum %08x bytes %d, file has crc %08x and %d bytes", c.seg.ID, c.seg.Checksum, c.seg.Bytes, crc32c(file), len(file))
		}
		if err := s.Verify(c.seg.ID); err != nil {
			t.Errorf("Verify(%s): %v", c.seg.ID, err)
		}
	}
	if b, n := s.Usage(); n != 2 || b != seg1.Bytes+got2.Bytes {
		t.Errorf("Usage() = %d bytes, %d segments; want %d, 2", b, n, seg1.Bytes+got2.Bytes)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if rep := s.RecoveryReport(); !rep.Clean() || rep.Checked != 2 {
		t.Errorf("second reopen: %s", rep)
	}
}

func TestOpenSegmentReaders(t *testing.T) {
	s := openStore(t, t.TempDir())
	w, frags := record(t, s, "cam-1", 3, t0, 2)
	r, err := s.OpenReader(w.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f3 := testFragment(t0, 2)
	if err := w.Append(f3); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Fragments()); n != 2 {
		t.Errorf("reader opened before the third append sees %d fragments, want 2", n)
	}
	if r.Segment().Sealed || r.Segment().Fragments != 2 {
		t.Errorf("reader's segment = %+v", r.Segment())
	}
	for i, fi := range r.Fragments() {
		b, err := r.ReadFragment(fi, nil)
		if err != nil || !bytes.Equal(b, frags[i].Data) {
			t.Errorf("fragment %d: err %v, bytes equal %v", i, err, bytes.Equal(b, frags[i].Data))
		}
	}
	checkFragments(t, s, w.ID(), append(frags, f3))

	segs, err := s.Segments("cam-1", t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 1 || segs[0].Sealed || !segs[0].End.Equal(t0.Add(3*time.Second)) || segs[0].Fragments != 3 {
		t.Errorf("Segments with one open segment = %+v", segs)
	}
	if err := s.Delete(w.ID()); !errors.Is(err, model.ErrInUse) {
		t.Errorf("Delete(open segment) = %v, want ErrInUse", err)
	}
	sealed, err := w.Seal()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(testFragment(t0, 3)); err == nil {
		t.Error("Append after Seal succeeded")
	}
	if again, err := w.Seal(); err != nil || again != sealed {
		t.Errorf("second Seal = %+v, %v; want the same segment", again, err)
	}
	if idx := r.FragmentAt(t0.Add(1500*time.Millisecond), false); idx != 1 {
		t.Errorf("FragmentAt(1.5s) = %d, want 1", idx)
	}
	if idx := r.FragmentAt(t0.Add(1500*time.Millisecond), true); idx != 0 {
		t.Errorf("FragmentAt(1.5s, keyframe) = %d, want 0", idx)
	}
	if idx := r.FragmentAt(t0.Add(-time.Second), false); idx != -1 {
		t.Errorf("FragmentAt(before) = %d, want -1", idx)
	}
}

func TestFlippedByteIsCorruptNotWrongBytes(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	w, frags := record(t, s, "cam-1", 1, t0, 4)
	seg, err := w.Seal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "segments", "cam-1", string(seg.ID)+".seg")
	r, err := s.OpenReader(seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	victim := r.Fragments()[2]
	flipByte(t, path, victim.Offset+victim.Size/2)

	buf := make([]byte, 0, 10)
	got, err := r.ReadFragment(victim, buf)
	if !errors.Is(err, model.ErrCorrupt) {
		t.Fatalf("ReadFragment of a flipped fragment = %d bytes, %v; want ErrCorrupt", len(got), err)
	}
	if len(got) != 0 {
		t.Errorf("ReadFragment returned %d bytes with its error", len(got))
	}
	for _, want := range []string{string(seg.ID), "offset " + strconv.FormatInt(victim.Offset, 10)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	for i, fi := range r.Fragments() {
		if i == 2 {
			continue
		}
		b, err := r.ReadFragment(fi, buf)
		if err != nil || !bytes.Equal(b, frags[i].Data) {
			t.Errorf("untouched fragment %d: %v", i, err)
		}
	}
	if err := s.Verify(seg.ID); !errors.Is(err, model.ErrCorrupt) || !strings.Contains(err.Error(), "block") {
		t.Errorf("Verify after a flipped byte = %v, want a block checksum error", err)
	}

	// A flipped byte in the init section: the reader refuses to open.
	flipByte(t, path, 10)
	if _, err := s.OpenReader(seg.ID); !errors.Is(err, model.ErrCorrupt) || !strings.Contains(err.Error(), "init") {
		t.Errorf("OpenReader with a corrupt init = %v, want ErrCorrupt naming the init", err)
	}
}

func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestEpochFencing(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	old, _ := record(t, s, "cam-1", 3, t0, 1)
	if _, err := s.Create("cam-1", 5, testInit, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// The old owner's writer is fenced as soon as a newer epoch is seen.
	if err := old.Append(testFragment(t0, 1)); !errors.Is(err, model.ErrStaleEpoch) {
		t.Errorf("Append under epoch 3 after epoch 5 was seen = %v, want ErrStaleEpoch", err)
	}
	if _, err := old.Seal(); err != nil {
		t.Errorf("Seal of the fenced writer (keeps what it recorded) = %v", err)
	}
	if _, err := s.Create("cam-1", 4, testInit, t0.Add(2*time.Minute)); !errors.Is(err, model.ErrStaleEpoch) {
		t.Errorf("Create with epoch 4 after 5 = %v, want ErrStaleEpoch", err)
	}
	if _, err := s.Create("cam-2", 1, testInit, t0); err != nil {
		t.Errorf("another camera's epochs are independent: %v", err)
	}
	if _, err := s.Create("cam-1", 5, testInit, t0.Add(time.Minute)); !errors.Is(err, model.ErrExists) {
		t.Errorf("Create of an existing segment = %v, want ErrExists", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if _, err := s.Create("cam-1", 4, testInit, t0.Add(3*time.Minute)); !errors.Is(err, model.ErrStaleEpoch) {
		t.Errorf("after restart, Create with epoch 4 = %v, want ErrStaleEpoch (the epoch must persist)", err)
	}
	if _, err := s.Create("cam-1", 5, testInit, t0.Add(4*time.Minute)); err != nil {
		t.Errorf("Create with the current epoch: %v", err)
	}
}

func TestSegmentsRange(t *testing.T) {
	s := openStore(t, t.TempDir())
	var ids []model.SegmentID
	for i := range 4 { // cam-1: [0,3s) [10,13s) [20,23s) [30,33s), the last one open
		w, _ := record(t, s, "cam-1", 1, t0.Add(time.Duration(i)*10*time.Second), 3)
		if i < 3 {
			if _, err := w.Seal(); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, w.ID())
	}
	record(t, s, "cam-10", 1, t0, 3) // a camera whose id extends cam-1's
	record(t, s, "cam-0", 1, t0, 3)

	sec := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Second))) }
	for _, c := range []struct {
		from, to time.Time
		want     []int
	}{
		{sec(-100), sec(100), []int{0, 1, 2, 3}},
		{sec(0), sec(3), []int{0}},
		{sec(3), sec(10), nil}, // the gap between two segments
		{sec(2.5), sec(10.5), []int{0, 1}},
		{sec(12.9), sec(20), []int{1}}, // [from,to): a segment starting at to is out
		{sec(32), sec(1000), []int{3}}, // the open one, by its live end
		{sec(33), sec(1000), nil},
		{sec(5), sec(5), nil},
	} {
		segs, err := s.Segments("cam-1", c.from, c.to)
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for _, seg := range segs {
			if seg.Camera != "cam-1" {
				t.Errorf("Segments(cam-1) returned a segment of %s", seg.Camera)
			}
			for i, id := range ids {
				if id == seg.ID {
					got = append(got, i)
				}
			}
		}
		if !equalInts(got, c.want) {
			t.Errorf("Segments(cam-1, %s, %s) = %v, want %v", c.from.Sub(t0), c.to.Sub(t0), got, c.want)
		}
	}
	if segs, _ := s.Segments("cam-1", sec(0), sec(100)); len(segs) == 4 && (segs[3].Sealed || !segs[2].Sealed) {
		t.Errorf("open segment must be listed with Sealed=false: %+v", segs)
	}
	if _, err := s.Segments("Bad Camera", t0, t0); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("Segments(bad id) = %v", err)
	}
	all, err := s.All()
	if err != nil || len(all) != 6 {
		t.Errorf("All() = %d segments, %v; want 6", len(all), err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDelete(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	w, frags := record(t, s, "cam-1", 1, t0, 3)
	seg, _ := w.Seal()
	w2, _ := record(t, s, "cam-1", 1, t0.Add(time.Minute), 2)
	seg2, _ := w2.Seal()
	r, err := s.OpenReader(seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := s.Delete(seg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Segment(seg.ID); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("Segment after Delete = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "segments", "cam-1", string(seg.ID)+".seg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file still there after Delete: %v", err)
	}
	if b, n := s.Usage(); n != 1 || b != seg2.Bytes {
		t.Errorf("Usage after Delete = %d, %d; want %d, 1", b, n, seg2.Bytes)
	}
	if err := s.Delete(seg.ID); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if b, err := r.ReadFragment(r.Fragments()[0], nil); err != nil || !bytes.Equal(b, frags[0].Data) {
		t.Errorf("a reader opened before Delete keeps reading: %v", err)
	}
	if segs, _ := s.Segments("cam-1", t0, t0.Add(time.Hour)); len(segs) != 1 || segs[0].ID != seg2.ID {
		t.Errorf("Segments after Delete = %+v", segs)
	}

	// Abort removes an open segment.
	w3, _ := record(t, s, "cam-1", 1, t0.Add(2*time.Minute), 1)
	if err := w3.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Segment(w3.ID()); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("Segment after Abort = %v", err)
	}
	if b, n := s.Usage(); n != 1 || b != seg2.Bytes {
		t.Errorf("Usage after Abort = %d, %d; want %d, 1", b, n, seg2.Bytes)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if rep := s.RecoveryReport(); !rep.Clean() {
		t.Errorf("reopen after deletions: %s", rep)
	}
}

func TestAppendRejectsBadInput(t *testing.T) {
	s := openStore(t, t.TempDir())
	w, frags := record(t, s, "cam-1", 1, t0, 2)
	before := w.Info()
	for name, f := range map[string]model.Fragment{
		"empty":           {Start: t0.Add(5 * time.Second), Duration: time.Second},
		"same start":      {Start: frags[1].Start, Duration: time.Second, Data: []byte("x")},
		"earlier":         {Start: t0.Add(500 * time.Millisecond), Duration: time.Second, Data: []byte("x")},
		"before segment":  {Start: t0.Add(-time.Second), Duration: time.Second, Data: []byte("x")},
		"negative length": {Start: t0.Add(9 * time.Second), Duration: -time.Second, Data: []byte("x")},
		"zero time":       {Duration: time.Second, Data: []byte("x")},
	} {
		if err := w.Append(f); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s: Append = %v, want ErrInvalid", name, err)
		}
	}
	if after := w.Info(); after != before {
		t.Errorf("rejected appends changed the segment: %+v → %+v", before, after)
	}
	checkFragments(t, s, w.ID(), frags)

	for name, c := range map[string]struct {
		camera model.CameraID
		init   []byte
		start  time.Time
	}{
		"bad camera": {"Cam 1", testInit, t0},
		"no init":    {"cam-1", nil, t0},
		"zero start": {"cam-1", testInit, time.Time{}},
	} {
		if _, err := s.Create(c.camera, 1, c.init, c.start); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("Create %s = %v, want ErrInvalid", name, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err == nil || !strings.Contains(err.Error(), "storage.node_id") {
		t.Errorf("DefaultConfig without a node id: %v", err)
	}
	cfg := DefaultConfig()
	cfg.NodeID = "n1"
	if err := cfg.Validate(); err != nil {
		t.Errorf("DefaultConfig with a node id: %v", err)
	}
	err := Config{BlockSize: 100}.Validate()
	if !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("bad config: %v", err)
	}
	for _, want := range []string{"storage.dir: is required", "storage.node_id: is required", "storage.block_size: must be between 4096 and 67108864 bytes, got 100"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, missing %q", err, want)
		}
	}
	if _, err := Open(Config{}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("Open(bad config) = %v", err)
	}
}

func TestSegmentIDs(t *testing.T) {
	id, err := NewSegmentID("cam-1", 7, t0)
	if err != nil {
		t.Fatal(err)
	}
	if want := model.SegmentID("cam-1.182ca136e3576200.7"); id != want {
		t.Errorf("NewSegmentID = %s, want %s", id, want)
	}
	cam, start, epoch, err := ParseSegmentID(id)
	if err != nil || cam != "cam-1" || !start.Equal(t0) || epoch != 7 {
		t.Errorf("ParseSegmentID(%s) = %s %s %d %v", id, cam, start, epoch, err)
	}
	for _, bad := range []model.SegmentID{"", "cam-1", "cam-1.182CA136E3576200.7", "cam-1.182ca136e3576200.07",
		"cam-1.182ca136e357620.7", "Cam.182ca136e3576200.7", "cam-1.182ca136e3576200.7.1", "cam-1.0000000000000000.1"} {
		if _, _, _, err := ParseSegmentID(bad); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("ParseSegmentID(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestImports enforces the dependency direction (STYLE.md habit 1): storage never imports
// cluster, gateway or node.
func TestImports(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, forbidden := range []string{"cluster", "gateway", "node"} {
				if p == "github.com/vigie-vms/vigie/"+forbidden || strings.HasPrefix(p, "github.com/vigie-vms/vigie/"+forbidden+"/") {
					t.Errorf("%s imports %s: storage must not depend on %s", name, p, forbidden)
				}
			}
		}
	}
}

// TestConcurrentCameras records several cameras at once while readers list and read them
// (run with -race).
func TestConcurrentCameras(t *testing.T) {
	s := openStore(t, t.TempDir())
	const cams, n = 4, 12
	var wg sync.WaitGroup
	errs := make(chan error, cams*n)
	ids := make([]model.SegmentID, cams)
	for c := range cams {
		cam := model.CameraID(fmt.Sprintf("cam-%d", c))
		w, err := s.Create(cam, 1, testInit, t0)
		if err != nil {
			t.Fatal(err)
		}
		ids[c] = w.ID()
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := w.Append(testFragment(t0, i)); err != nil {
					errs <- err
				}
			}
			if _, err := w.Seal(); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			for range n {
				if _, err := s.Segments(cam, t0, t0.Add(time.Hour)); err != nil {
					errs <- err
				}
				r, err := s.OpenReader(w.ID())
				if err != nil {
					errs <- err
					continue
				}
				var buf []byte
				for _, fi := range r.Fragments() {
					if buf, err = r.ReadFragment(fi, buf); err != nil {
						errs <- err
					}
				}
				_ = r.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var want []model.Fragment
	for i := range n {
		want = append(want, testFragment(t0, i))
	}
	for _, id := range ids {
		checkFragments(t, s, id, want)
	}
}

func TestClosedStore(t *testing.T) {
	s := openStore(t, t.TempDir())
	w, _ := record(t, s, "cam-1", 1, t0, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := w.Append(testFragment(t0, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if _, err := w.Seal(); !errors.Is(err, ErrClosed) {
		t.Errorf("Seal after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Create("cam-1", 1, testInit, t0.Add(time.Minute)); !errors.Is(err, ErrClosed) {
		t.Errorf("Create after Close = %v", err)
	}
	if _, err := s.Segments("cam-1", t0, t0.Add(time.Hour)); !errors.Is(err, ErrClosed) {
		t.Errorf("Segments after Close = %v", err)
	}
	if _, err := s.OpenReader(w.ID()); !errors.Is(err, ErrClosed) {
		t.Errorf("OpenReader after Close = %v", err)
	}
}
