package storage

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

// TestCrashRecovery simulates what kill -9 during recording leaves behind (plus disk
// damage), reopens, and checks the report and that only verified fragments are served.
func TestCrashRecovery(t *testing.T) {
	type damage struct {
		path string // the open segment's file
		key  segKey // its index key
		fi   []model.FragmentInfo
		size int64
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string, d damage)
		keep   []int // fragments still served, of the 3 appended
		// expected report entry
		truncated   func(d damage) int64
		dropped     int
		sealed      bool
		removed     bool
		quarantined bool
		reason      string
	}{
		{
			name:      "killed after the segment's last append",
			damage:    func(*testing.T, string, damage) {},
			keep:      []int{0, 1, 2},
			truncated: func(damage) int64 { return 0 },
			sealed:    true,
			reason:    "sealed with 3 fragments",
		},
		{
			name: "fragment in flight: bytes written, index record not committed",
			damage: func(t *testing.T, _ string, d damage) {
				appendTo(t, d.path, testFragment(t0, 3).Data[:1000])
			},
			keep:      []int{0, 1, 2},
			truncated: func(damage) int64 { return 1000 },
			sealed:    true,
			reason:    "cut 1000 bytes",
		},
		{
			name: "fragment fsynced but its index record lost",
			damage: func(t *testing.T, dir string, d damage) {
				editIndex(t, dir, func(db *pebble.DB) {
					if err := db.Delete(d.key.fragmentKey(2), pebble.Sync); err != nil {
						t.Fatal(err)
					}
				})
			},
			keep:      []int{0, 1},
			truncated: func(d damage) int64 { return d.fi[2].Size },
			sealed:    true,
		},
		{
			name: "last fragment truncated (index points past the end of the file)",
			damage: func(t *testing.T, _ string, d damage) {
				truncateTo(t, d.path, d.size-100)
			},
			keep:      []int{0, 1},
			truncated: func(d damage) int64 { return d.fi[2].Size - 100 },
			dropped:   1,
			sealed:    true,
			reason:    "file ends at",
		},
		{
			name: "garbage tail",
			damage: func(t *testing.T, _ string, d damage) {
				appendTo(t, d.path, bytes.Repeat([]byte{0xde, 0xad}, 2500))
			},
			keep:      []int{0, 1, 2},
			truncated: func(damage) int64 { return 5000 },
			sealed:    true,
		},
		{
			name: "a middle fragment fails its checksum",
			damage: func(t *testing.T, _ string, d damage) {
				flipByte(t, d.path, d.fi[1].Offset+7)
			},
			keep:      []int{0, 2},
			truncated: func(damage) int64 { return 0 },
			dropped:   1,
			sealed:    true,
			reason:    "fails its checksum",
		},
		{
			name: "nothing complete (crash during the first fragment)",
			damage: func(t *testing.T, _ string, d damage) {
				truncateTo(t, d.path, d.fi[0].Offset+10)
			},
			truncated: func(d damage) int64 { return 10 },
			dropped:   3,
			removed:   true,
			reason:    "no complete fragment",
		},
		{
			name: "init section corrupt",
			damage: func(t *testing.T, _ string, d damage) {
				flipByte(t, d.path, 3)
			},
			truncated:   func(damage) int64 { return 0 },
			quarantined: true,
			reason:      "init section",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			sw, sealedFrags := record(t, s, "cam-1", 1, t0.Add(-time.Hour), 2)
			sealed, err := sw.Seal()
			if err != nil {
				t.Fatal(err)
			}
			w, frags := record(t, s, "cam-1", 1, t0, 3)
			r, err := s.OpenReader(w.ID())
			if err != nil {
				t.Fatal(err)
			}
			d := damage{path: filepath.Join(dir, "segments", "cam-1", string(w.ID())+".seg"), key: w.key, fi: r.Fragments(), size: w.Info().Bytes}
			_ = r.Close()
			if err := s.Close(); err != nil { // the writer stays open: as after kill -9
				t.Fatal(err)
			}
			c.damage(t, dir, d)

			s = openStore(t, dir)
			rep := s.RecoveryReport()
			t.Log(rep.String())
			if rep.Checked != 2 || len(rep.Segments) != 1 {
				t.Fatalf("report = %s; want 2 checked, 1 repaired", rep)
			}
			e := rep.Segments[0]
			if e.Segment != w.ID() || e.TruncatedBytes != c.truncated(d) || e.DroppedFragments != c.dropped ||
				e.Sealed != c.sealed || e.Removed != c.removed || (e.QuarantinedTo != "") != c.quarantined ||
				!strings.Contains(e.Reason, c.reason) {
				t.Errorf("report entry = %+v\nwant truncated %d, dropped %d, sealed %v, removed %v, quarantined %v, reason containing %q",
					e, c.truncated(d), c.dropped, c.sealed, c.removed, c.quarantined, c.reason)
			}
			if !strings.Contains(rep.String(), string(w.ID())) {
				t.Errorf("report line does not name the segment: %s", rep)
			}
			checkFragments(t, s, sealed.ID, sealedFrags) // the sealed neighbour is untouched

			var want []model.Fragment
			for _, i := range c.keep {
				want = append(want, frags[i])
			}
			if len(want) > 0 {
				checkFragments(t, s, w.ID(), want)
				seg, err := s.Segment(w.ID())
				if err != nil {
					t.Fatal(err)
				}
				if !seg.Sealed || seg.Fragments != len(want) || !seg.End.Equal(want[len(want)-1].Start.Add(time.Second)) {
					t.Errorf("recovered segment = %+v", seg)
				}
				if err := s.Verify(w.ID()); err != nil {
					t.Errorf("Verify recovered segment: %v", err)
				}
				if st, err := os.Stat(d.path); err != nil || st.Size() != seg.Bytes {
					t.Errorf("file size %v (%v), segment says %d", st.Size(), err, seg.Bytes)
				}
			} else {
				if _, err := s.Segment(w.ID()); !errors.Is(err, model.ErrNotFound) {
					t.Errorf("Segment of a removed/quarantined segment = %v, want ErrNotFound", err)
				}
				if _, err := s.OpenReader(w.ID()); !errors.Is(err, model.ErrNotFound) {
					t.Errorf("OpenReader of a removed/quarantined segment = %v, want ErrNotFound", err)
				}
				if _, err := os.Stat(d.path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("file still in place: %v", err)
				}
			}
			if c.quarantined {
				if _, err := os.Stat(e.QuarantinedTo); err != nil {
					t.Errorf("quarantined file: %v", err)
				}
				why, err := os.ReadFile(e.QuarantinedTo + ".reason")
				if err != nil || !strings.Contains(string(why), c.reason) {
					t.Errorf("quarantine reason file = %q, %v", why, err)
				}
			}
			all, _ := s.All()
			wantN := 2
			if len(want) == 0 {
				wantN = 1
			}
			if _, n := s.Usage(); len(all) != wantN || n != wantN {
				t.Errorf("All() = %d segments, Usage = %d; want %d", len(all), n, wantN)
			}

			// The repair is complete: a second restart finds nothing to do.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir)
			if rep := s.RecoveryReport(); !rep.Clean() {
				t.Errorf("second restart: %s", rep)
			}
		})
	}
}

func appendTo(t testing.TB, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func truncateTo(t testing.TB, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func TestStartupCheckFilesAndIndexAgree(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	keep, keepFrags := record(t, s, "cam-1", 1, t0, 2)
	keepSeg, _ := keep.Seal()
	gone, _ := record(t, s, "cam-1", 1, t0.Add(time.Minute), 2)
	goneSeg, _ := gone.Seal()
	grown, _ := record(t, s, "cam-2", 1, t0, 2)
	grownSeg, _ := grown.Seal()
	deleting, _ := record(t, s, "cam-2", 1, t0.Add(time.Minute), 1)
	deletingSeg, _ := deleting.Seal()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segPath := func(id model.SegmentID, cam string) string {
		return filepath.Join(dir, "segments", cam, string(id)+".seg")
	}
	// A sealed segment's file vanished.
	if err := os.Remove(segPath(goneSeg.ID, "cam-1")); err != nil {
		t.Fatal(err)
	}
	// A sealed segment's file grew.
	appendTo(t, segPath(grownSeg.ID, "cam-2"), []byte("junk"))
	// Files with no index record: a segment created just before the crash, a stray file,
	// a camera directory the index never heard of.
	strayID, _ := NewSegmentID("cam-1", 2, t0.Add(2*time.Minute))
	orphans := []string{segPath(strayID, "cam-1"), filepath.Join(dir, "segments", "cam-1", "notes.txt"),
		filepath.Join(dir, "segments", "cam-9", "cam-9.0000000000000001.1.seg")}
	for _, p := range orphans {
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, testInit, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A deletion interrupted after its index batch: the tombstone is there, the file too.
	dk, _ := parseSegmentID(deletingSeg.ID)
	editIndex(t, dir, func(db *pebble.DB) {
		b := db.NewBatch()
		_ = b.Delete(dk.segmentKey(), nil)
		p := dk.fragmentPrefix()
		_ = b.DeleteRange(p, prefixEnd(p), nil)
		_ = b.Set(dk.tombstoneKey(), nil, nil)
		if err := db.Apply(b, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	})

	s = openStore(t, dir)
	rep := s.RecoveryReport()
	t.Log(rep.String())
	byFile := map[string]SegmentRecovery{}
	for _, e := range rep.Segments {
		byFile[e.File] = e
	}
	if len(rep.Segments) != 6 {
		t.Errorf("report has %d entries, want 6: %s", len(rep.Segments), rep)
	}
	if e := byFile[segPath(goneSeg.ID, "cam-1")]; !e.IndexDropped || !strings.Contains(e.Reason, "missing") {
		t.Errorf("missing file: %+v", e)
	}
	if e := byFile[segPath(grownSeg.ID, "cam-2")]; e.QuarantinedTo == "" || !strings.Contains(e.Reason, "file has") {
		t.Errorf("grown sealed file: %+v", e)
	}
	if e := byFile[segPath(deletingSeg.ID, "cam-2")]; !e.Removed {
		t.Errorf("interrupted deletion: %+v", e)
	}
	if _, err := os.Stat(segPath(deletingSeg.ID, "cam-2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("interrupted deletion left the file: %v", err)
	}
	for _, p := range orphans {
		e := byFile[p]
		if e.QuarantinedTo == "" || e.Reason != "file has no index record" {
			t.Errorf("orphan %s: %+v", p, e)
			continue
		}
		if b, err := os.ReadFile(e.QuarantinedTo); err != nil || !bytes.Equal(b, testInit) {
			t.Errorf("orphan %s not moved intact to %s: %v", p, e.QuarantinedTo, err)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("orphan %s still in place", p)
		}
	}
	if e := byFile[orphans[0]]; e.Segment != strayID {
		t.Errorf("orphan segment file is reported as %q, want %q", e.Segment, strayID)
	}
	all, err := s.All()
	if err != nil || len(all) != 1 || all[0].ID != keepSeg.ID {
		t.Errorf("All() after the check = %+v, %v; want only %s", all, err, keepSeg.ID)
	}
	checkFragments(t, s, keepSeg.ID, keepFrags)
	if b, n := s.Usage(); n != 1 || b != keepSeg.Bytes {
		t.Errorf("Usage = %d, %d", b, n)
	}
	// Nothing unverified is served for the quarantined segment, and its epoch still fences.
	if _, err := s.OpenReader(grownSeg.ID); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("OpenReader(quarantined) = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if rep := s.RecoveryReport(); !rep.Clean() {
		t.Errorf("second restart: %s", rep)
	}
}
