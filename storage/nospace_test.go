package storage

import (
	"errors"
	"io/fs"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vigie-vms/vigie/model"
)

// fullDisk wraps a segment file; while full is set, WriteAt writes half of what it is
// given and fails with ENOSPC, as a real full disk does.
type fullDisk struct {
	*os.File
	full *atomic.Bool
}

func (f fullDisk) WriteAt(p []byte, off int64) (int, error) {
	if !f.full.Load() {
		return f.File.WriteAt(p, off)
	}
	n, err := f.File.WriteAt(p[:len(p)/2], off)
	if err != nil {
		return n, err
	}
	return n, &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
}

func TestAppendOnFullDiskLeavesSegmentAsItWas(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	var full atomic.Bool
	s.openFile = func(name string, flag int, perm fs.FileMode) (segFile, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		return fullDisk{File: f, full: &full}, nil
	}
	w, frags := record(t, s, "cam-1", 1, t0, 2)
	before := w.Info()
	usedBefore, _ := s.Usage()

	full.Store(true)
	err := w.Append(testFragment(t0, 2))
	if !errors.Is(err, model.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Append on a full disk = %v, want ErrNoSpace wrapping ENOSPC", err)
	}
	if after := w.Info(); after != before {
		t.Errorf("failed append changed the segment: %+v → %+v", before, after)
	}
	if used, _ := s.Usage(); used != usedBefore {
		t.Errorf("Usage went from %d to %d after a failed append", usedBefore, used)
	}
	st, err := os.Stat(w.path)
	if err != nil || st.Size() != before.Bytes {
		t.Errorf("file is %d bytes after the failed append, want %d (truncated back)", st.Size(), before.Bytes)
	}
	checkFragments(t, s, w.ID(), frags)

	// Space comes back: recording goes on where it stopped.
	full.Store(false)
	f3 := testFragment(t0, 2)
	if err := w.Append(f3); err != nil {
		t.Fatalf("Append after space came back: %v", err)
	}
	frags = append(frags, f3)
	if _, err := w.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if rep := s.RecoveryReport(); !rep.Clean() {
		t.Errorf("reopen: %s", rep)
	}
	checkFragments(t, s, w.ID(), frags)
}
