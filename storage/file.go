package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vigie-vms/vigie/model"
)

// segFile is what the store needs of an open segment file. *os.File implements it; tests
// substitute one that fails like a full disk.
type segFile interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Stat() (fs.FileInfo, error)
	Close() error
}

func osOpenFile(name string, flag int, perm fs.FileMode) (segFile, error) {
	return os.OpenFile(name, flag, perm)
}

// ioError wraps an I/O error with what the store was doing, and adds model.ErrNoSpace when
// the disk is full so callers can tell it apart with errors.Is.
func ioError(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("storage: %s: %w: %w", what, model.ErrNoSpace, err)
	}
	return fmt.Errorf("storage: %s: %w", what, err)
}

// syncDir fsyncs a directory so that a file created, renamed or removed in it survives a
// crash.
func (s *Store) syncDir(dir string) error {
	if s.cfg.NoSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncAppended makes a fragment just written to f durable: in a round shared with every
// other camera's (syncGroup), or by fsync of f when the store has no sync group.
func (s *Store) syncAppended(f segFile) error {
	if s.appendSync != nil {
		return s.appendSync.wait()
	}
	return s.syncFile(f)
}

func (s *Store) syncFile(f segFile) error {
	if s.cfg.NoSync {
		return nil
	}
	return f.Sync()
}

func (s *Store) cameraDir(camera model.CameraID) string {
	return filepath.Join(s.segDir, string(camera))
}

func (s *Store) segPath(k segKey) string {
	return filepath.Join(s.cameraDir(k.camera), k.fileName())
}

// quarantine moves path into <Dir>/quarantine/ next to a .reason file, and returns where
// it went. The name gets a numeric suffix when a file of that name is already there.
func (s *Store) quarantine(path, reason string) (string, error) {
	if err := os.MkdirAll(s.quarantineDir, 0o755); err != nil {
		return "", err
	}
	base := filepath.Base(path)
	dst := filepath.Join(s.quarantineDir, base)
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = filepath.Join(s.quarantineDir, fmt.Sprintf("%s.%d", base, i))
	}
	// The reason first: a crash between the two leaves a stray .reason, never an
	// unexplained file.
	if err := os.WriteFile(dst+".reason", []byte(reason+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(path, dst); err != nil {
		return "", err
	}
	if err := s.syncDir(s.quarantineDir); err != nil {
		return dst, err
	}
	if err := s.syncDir(filepath.Dir(path)); err != nil {
		return dst, err
	}
	s.log.Warn("storage: file quarantined", slog.String("file", path), slog.String("to", dst), slog.String("reason", reason))
	return dst, nil
}
