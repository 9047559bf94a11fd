package node

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

func openTestStore(t *testing.T) *storage.Store {
	t.Helper()
	cfg := storage.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.NodeID = "node-1"
	cfg.NoSync = true
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := storage.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRecorderSealsAtKeyframesBySizeAgeAndInit feeds a recorder one fragment a second,
// with a keyframe every third, and checks where segments are cut: never before a
// non-keyframe (every segment plays from its start), once past the age limit, and at every
// new codec configuration; and that no fragment is lost across the cuts.
func TestRecorderSealsAtKeyframesBySizeAgeAndInit(t *testing.T) {
	store := openTestStore(t)
	var sealed []model.Segment
	r := &recorder{camera: "cam-1", epoch: 1, store: store, maxBytes: 1 << 20, maxAge: 5 * time.Second,
		sealed: func(s model.Segment) { sealed = append(sealed, s) }, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	frag := func(i int) model.Fragment {
		return model.Fragment{Start: base.Add(time.Duration(i) * time.Second), Duration: time.Second, Keyframe: i%3 == 0, Data: make([]byte, 1000)}
	}
	if err := r.WriteFragment(frag(0)); err == nil {
		t.Fatal("a fragment before any init was accepted")
	}
	if err := r.WriteInit([]byte("init-a"), "H264 640x360"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 14; i++ {
		if err := r.WriteFragment(frag(i)); err != nil {
			t.Fatal(err)
		}
	}
	// New codec configuration: the open segment is sealed at once.
	if err := r.WriteInit([]byte("init-b"), "H264 1280x720"); err != nil {
		t.Fatal(err)
	}
	for i := 14; i < 17; i++ {
		f := frag(i)
		f.Keyframe = i == 14
		if err := r.WriteFragment(f); err != nil {
			t.Fatal(err)
		}
	}
	r.close()
	if err := r.WriteFragment(frag(20)); err == nil {
		t.Error("a closed recorder accepted a fragment")
	}

	// Age 5 s, keyframes at 0,3,6,9,12: cuts at 6 (age 6 ≥ 5) and 12; then 14 (init).
	wantStarts := []int{0, 6, 12, 14}
	if len(sealed) != len(wantStarts) {
		t.Fatalf("sealed %d segments, want %d: %+v", len(sealed), len(wantStarts), sealed)
	}
	total := 0
	for i, s := range sealed {
		if want := base.Add(time.Duration(wantStarts[i]) * time.Second); !s.Start.Equal(want) {
			t.Errorf("segment %d starts at %s, want %s", i, s.Start.Sub(base), want.Sub(base))
		}
		if !s.Sealed || s.Epoch != 1 || s.Camera != "cam-1" {
			t.Errorf("segment %d: %+v", i, s)
		}
		total += s.Fragments
	}
	if total != 17 {
		t.Errorf("segments hold %d fragments, want all 17", total)
	}
}

// TestRecorderChangesEpochAtAKeyframe: a new epoch (the camera was handed over to this
// node) applies from the next keyframe, so the segment under the new epoch starts with a
// keyframe and no fragment is lost.
func TestRecorderChangesEpochAtAKeyframe(t *testing.T) {
	store := openTestStore(t)
	var sealed []model.Segment
	r := &recorder{camera: "cam-1", epoch: 1, store: store, maxBytes: 1 << 20, maxAge: time.Hour,
		sealed: func(s model.Segment) { sealed = append(sealed, s) }, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	if err := r.WriteInit([]byte("init"), "H264"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		if i == 4 {
			r.setEpoch(2) // between keyframes 3 and 6
		}
		f := model.Fragment{Start: base.Add(time.Duration(i) * time.Second), Duration: time.Second, Keyframe: i%3 == 0, Data: make([]byte, 100)}
		if err := r.WriteFragment(f); err != nil {
			t.Fatal(err)
		}
	}
	r.close()
	if len(sealed) != 2 {
		t.Fatalf("sealed %d segments, want 2: %+v", len(sealed), sealed)
	}
	if sealed[0].Epoch != 1 || sealed[0].Fragments != 6 || sealed[1].Epoch != 2 || sealed[1].Fragments != 2 ||
		!sealed[1].Start.Equal(base.Add(6*time.Second)) {
		t.Errorf("segments: epoch %d with %d fragments, then epoch %d with %d from %s; want epoch 1 with 6, then epoch 2 with 2 from the keyframe at 6 s",
			sealed[0].Epoch, sealed[0].Fragments, sealed[1].Epoch, sealed[1].Fragments, sealed[1].Start.Sub(base))
	}
}
