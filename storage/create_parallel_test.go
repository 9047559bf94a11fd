package storage

import (
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// stuckSync wraps a segment file whose Sync blocks until release is closed: a disk that
// takes its time to flush.
type stuckSync struct {
	*os.File
	entered chan<- struct{}
	release <-chan struct{}
}

func (f stuckSync) Sync() error {
	f.entered <- struct{}{}
	<-f.release
	return f.File.Sync()
}

// TestCreateOfOneCameraDoesNotWaitForAnother: while a camera's new segment waits for the
// disk to flush its init, another camera opens a segment. A store-wide lock across the
// syncs of Create made hundreds of cameras that open segments together wait for each
// other for tens of seconds (their RTSP reads stalled and the cameras dropped frames).
func TestCreateOfOneCameraDoesNotWaitForAnother(t *testing.T) {
	s := openStore(t, t.TempDir())
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	s.openFile = func(name string, flag int, perm fs.FileMode) (segFile, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil || !strings.Contains(name, "cam-slow") {
			return f, err
		}
		return stuckSync{File: f, entered: entered, release: release}, nil
	}
	create := func(camera model.CameraID) <-chan error {
		done := make(chan error, 1)
		go func() {
			w, err := s.Create(camera, 1, []byte("init"), t0)
			if err == nil {
				err = w.Abort()
			}
			done <- err
		}()
		return done
	}
	slow := create("cam-slow")
	<-entered // cam-slow's Create is inside its sync
	fast := create("cam-fast")
	select {
	case err := <-fast:
		if err != nil {
			t.Fatalf("Create of cam-fast: %v", err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		<-slow
		<-fast
		t.Fatal("Create of cam-fast waited 10 s for cam-slow's sync")
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("Create of cam-slow: %v", err)
	}
}
