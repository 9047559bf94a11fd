package storage

import (
	"bytes"
	"os"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPages counts the pages of the file at path that are in the page cache.
func residentPages(t *testing.T, path string) (resident, total int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m) //nolint:errcheck
	vec := make([]byte, (len(m)+int(pageSize)-1)/int(pageSize))
	if _, _, errno := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident, len(vec)
}

// Footage leaves the page cache once durable: a recorder writes far more than it reads
// back, and keeping it cached costs a new page for every 4 KiB written (on this VM, where
// the host reclaims free guest memory, a third of a core at 600 cameras × 2 Mbit/s). Only
// the page still being appended to stays; the footage still reads back intact.
func TestDurableFootageLeavesThePageCache(t *testing.T) {
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs, where the page cache is the storage", dir)
	}
	s := openStore(t, dir)
	w, frags := record(t, s, "cam-1", 1, t0, 40)
	resident, total := residentPages(t, w.path)
	if total < 100 || resident > 1 {
		t.Fatalf("%d of the segment file's %d pages are in the page cache after 40 durable appends, want at most the last one", resident, total)
	}
	if _, err := w.Seal(); err != nil {
		t.Fatal(err)
	}
	_, got, _ := readAll(t, s, w.ID())
	for i := range frags {
		if !bytes.Equal(got[i], frags[i].Data) {
			t.Fatalf("fragment %d reads back different bytes", i)
		}
	}
}
