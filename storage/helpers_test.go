package storage

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testConfig(t testing.TB, dir string) Config {
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.NodeID = "node-a"
	cfg.BlockSize = MinBlockSize
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return cfg
}

func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(testConfig(t, dir))
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// t0 is a fixed wall-clock time the tests record at.
var t0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// testFragment returns fragment i of a recording that starts at start: one second each,
// sizes varying so fragments straddle checksum blocks.
func testFragment(start time.Time, i int) model.Fragment {
	return model.Fragment{
		Start:    start.Add(time.Duration(i) * time.Second),
		Duration: time.Second,
		Keyframe: i%2 == 0,
		Data:     randBytes(uint64(i)+1000*uint64(start.Unix()%1000), 3000+i*1777),
	}
}

var testInit = randBytes(42, 700)

// record creates a segment of camera at start and appends n fragments; it returns the
// writer and the fragments written.
func record(t testing.TB, s *Store, camera model.CameraID, epoch uint64, start time.Time, n int) (*SegmentWriter, []model.Fragment) {
	t.Helper()
	w, err := s.Create(camera, epoch, testInit, start)
	if err != nil {
		t.Fatalf("Create(%s): %v", camera, err)
	}
	var frags []model.Fragment
	for i := range n {
		f := testFragment(start, i)
		if err := w.Append(f); err != nil {
			t.Fatalf("Append fragment %d: %v", i, err)
		}
		frags = append(frags, f)
	}
	return w, frags
}

// readAll opens a reader and returns the init and every fragment's bytes, failing the
// test on any error.
func readAll(t testing.TB, s *Store, id model.SegmentID) ([]byte, [][]byte, []model.FragmentInfo) {
	t.Helper()
	r, err := s.OpenReader(id)
	if err != nil {
		t.Fatalf("OpenReader(%s): %v", id, err)
	}
	defer r.Close()
	var out [][]byte
	for _, fi := range r.Fragments() {
		b, err := r.ReadFragment(fi, nil)
		if err != nil {
			t.Fatalf("ReadFragment(%s @%d): %v", id, fi.Offset, err)
		}
		out = append(out, b)
	}
	return bytes.Clone(r.Init()), out, r.Fragments()
}

// checkFragments asserts the reader serves exactly want, byte for byte and with its times.
func checkFragments(t testing.TB, s *Store, id model.SegmentID, want []model.Fragment) {
	t.Helper()
	init, got, infos := readAll(t, s, id)
	if !bytes.Equal(init, testInit) {
		t.Errorf("%s: init differs from what was written", id)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d fragments served, want %d", id, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i].Data) {
			t.Errorf("%s: fragment %d: bytes differ from what was written", id, i)
		}
		if !infos[i].Start.Equal(want[i].Start) || infos[i].Duration != want[i].Duration || infos[i].Keyframe != want[i].Keyframe {
			t.Errorf("%s: fragment %d: info %+v, want start %s duration %s keyframe %v", id, i, infos[i], want[i].Start, want[i].Duration, want[i].Keyframe)
		}
	}
}

// editIndex opens the (closed) store's Pebble index directly, to simulate what a crash
// leaves behind.
func editIndex(t testing.TB, dir string, fn func(db *pebble.DB)) {
	t.Helper()
	db, err := pebble.Open(filepath.Join(dir, "index"), &pebble.Options{Logger: pebbleLogger{slog.New(slog.NewTextHandler(tWriter{t}, nil))}})
	if err != nil {
		t.Fatal(err)
	}
	fn(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
