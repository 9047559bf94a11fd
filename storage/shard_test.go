package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage/erasure"
)

func putShard(t testing.TB, s *Store, id ShardID, data []byte) {
	t.Helper()
	if err := s.PutShard(context.Background(), id, bytes.NewReader(data), int64(len(data)), crc32c(data)); err != nil {
		t.Fatalf("PutShard(%s): %v", id, err)
	}
}

func readShard(t testing.TB, s *Store, id ShardID) []byte {
	t.Helper()
	r, err := s.OpenShard(id)
	if err != nil {
		t.Fatalf("OpenShard(%s): %v", id, err)
	}
	defer r.Close()
	b := make([]byte, r.Size())
	if _, err := r.ReadAt(b, 0); err != nil {
		t.Fatalf("read shard %s: %v", id, err)
	}
	return b
}

// shardDirFiles lists the shard directory (to check nothing is left behind).
func shardDirFiles(t testing.TB, s *Store) []string {
	t.Helper()
	ents, err := os.ReadDir(s.shardDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestShardRoundTripAndReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := ShardID{Stripe: "st-1", Index: 4}
	b := ShardID{Stripe: "st-1", Index: 5}
	da, db := randBytes(1, 3*MinBlockSize+17), randBytes(2, 100)
	putShard(t, s, a, da)
	putShard(t, s, b, db)
	if got := readShard(t, s, a); !bytes.Equal(got, da) {
		t.Fatal("shard bytes differ from what was put")
	}
	// Unaligned ranges straddling blocks.
	r, err := s.OpenShard(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, rg := range [][2]int64{{0, 1}, {MinBlockSize - 3, 10}, {5, 2 * MinBlockSize}, {int64(len(da)) - 5, 5}} {
		p := make([]byte, rg[1])
		if n, err := r.ReadAt(p, rg[0]); err != nil || n != len(p) || !bytes.Equal(p, da[rg[0]:rg[0]+rg[1]]) {
			t.Errorf("ReadAt(%d, %d) = %d, %v or wrong bytes", rg[0], rg[1], n, err)
		}
	}
	if n, err := r.ReadAt(make([]byte, 10), int64(len(da))-4); n != 4 || err != io.EOF {
		t.Errorf("ReadAt past the end = %d, %v; want 4, io.EOF", n, err)
	}
	_ = r.Close()
	if err := s.PutShard(context.Background(), a, bytes.NewReader(da), int64(len(da))); !errors.Is(err, model.ErrExists) {
		t.Errorf("second PutShard = %v, want ErrExists", err)
	}
	if n, c := s.ShardUsage(); n != int64(len(da)+len(db)) || c != 2 {
		t.Errorf("ShardUsage = %d bytes, %d shards", n, c)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	if rep := s.RecoveryReport(); !rep.Clean() {
		t.Errorf("reopen: %s", rep)
	}
	list, err := s.Shards()
	if err != nil || len(list) != 2 || list[0].ID != a || list[1].ID != b || list[0].Checksum != crc32c(da) || list[0].Bytes != int64(len(da)) {
		t.Fatalf("Shards() = %+v, %v", list, err)
	}
	if err := s.VerifyShard(a); err != nil {
		t.Errorf("VerifyShard: %v", err)
	}
	if err := s.DeleteShard(a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenShard(a); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("OpenShard after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteShard(a); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("second DeleteShard = %v, want ErrNotFound", err)
	}
	if files := shardDirFiles(t, s); len(files) != 1 {
		t.Errorf("shard directory holds %v after delete, want only b", files)
	}
}

func TestPutShardFailuresLeaveNothing(t *testing.T) {
	s := openStore(t, t.TempDir())
	id := ShardID{Stripe: "st-2", Index: 2}
	data := randBytes(3, 5*MinBlockSize)
	ctx := context.Background()
	cases := []struct {
		name string
		put  func() error
		want error
	}{
		{"checksum mismatch", func() error {
			return s.PutShard(ctx, id, bytes.NewReader(data), int64(len(data)), crc32c(data)+1)
		}, model.ErrCorrupt},
		{"stream too short", func() error {
			return s.PutShard(ctx, id, bytes.NewReader(data[:100]), int64(len(data)))
		}, model.ErrInvalid},
		{"stream too long", func() error {
			return s.PutShard(ctx, id, bytes.NewReader(data), int64(len(data)-1))
		}, model.ErrInvalid},
		{"stream fails", func() error {
			return s.PutShard(ctx, id, io.MultiReader(bytes.NewReader(data[:MinBlockSize+1]), errReader{io.ErrClosedPipe}), int64(len(data)))
		}, io.ErrClosedPipe},
		{"bad id", func() error {
			return s.PutShard(ctx, ShardID{Stripe: "../x", Index: 1}, bytes.NewReader(data), int64(len(data)))
		}, model.ErrInvalid},
	}
	for _, tc := range cases {
		if err := tc.put(); !errors.Is(err, tc.want) {
			t.Errorf("%s: PutShard = %v, want %v", tc.name, err, tc.want)
		}
		if files := shardDirFiles(t, s); len(files) != 0 {
			t.Errorf("%s: left %v behind", tc.name, files)
		}
		if _, err := s.OpenShard(id); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("%s: shard is readable after a failed put: %v", tc.name, err)
		}
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.PutShard(ctx2, id, bytes.NewReader(data), int64(len(data))); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled PutShard = %v", err)
	}
	if files := shardDirFiles(t, s); len(files) != 0 {
		t.Errorf("cancelled put left %v behind", files)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestPutShardOnFullDisk(t *testing.T) {
	s := openStore(t, t.TempDir())
	var full atomic.Bool
	s.openFile = func(name string, flag int, perm fs.FileMode) (segFile, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		return fullDisk{File: f, full: &full}, nil
	}
	id := ShardID{Stripe: "st-3", Index: 3}
	data := randBytes(4, 4*MinBlockSize)
	full.Store(true)
	err := s.PutShard(context.Background(), id, bytes.NewReader(data), int64(len(data)))
	if !errors.Is(err, model.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("PutShard on a full disk = %v, want ErrNoSpace wrapping ENOSPC", err)
	}
	if files := shardDirFiles(t, s); len(files) != 0 {
		t.Errorf("full disk: left %v behind", files)
	}
	if _, n := s.ShardUsage(); n != 0 {
		t.Errorf("ShardUsage counts %d shards after a failed put", n)
	}
	full.Store(false)
	putShard(t, s, id, data)

	// The reserve: less than MinFreeBytes would be left.
	s.cfg.MinFreeBytes = 1 << 20
	s.statfs = func(string) (int64, int64, error) { return 1<<20 + 1000, 1 << 30, nil }
	if s.Full() {
		t.Error("Full() with more than the reserve free")
	}
	id2 := ShardID{Stripe: "st-3", Index: 4}
	err = s.PutShard(context.Background(), id2, bytes.NewReader(data), int64(len(data)))
	if !errors.Is(err, model.ErrNoSpace) || !strings.Contains(err.Error(), "min_free_bytes") {
		t.Errorf("PutShard into the reserve = %v, want ErrNoSpace naming storage.min_free_bytes", err)
	}
	s.statfs = func(string) (int64, int64, error) { return 1000, 1 << 30, nil }
	if !s.Full() {
		t.Error("Full() = false with 1000 bytes free and a 1 MiB reserve")
	}
}

// corruptByte flips one byte of a file.
func corruptByte(t testing.TB, path string, off int64) {
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
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptShardIsNeverServed(t *testing.T) {
	s := openStore(t, t.TempDir())
	id := ShardID{Stripe: "st-4", Index: 1}
	data := randBytes(5, 4*MinBlockSize)
	putShard(t, s, id, data)
	corruptByte(t, s.shardPath(id), 2*MinBlockSize+100)
	r, err := s.OpenShard(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Blocks before the bad one still read.
	p := make([]byte, 2*MinBlockSize)
	if _, err := r.ReadAt(p, 0); err != nil || !bytes.Equal(p, data[:len(p)]) {
		t.Errorf("healthy blocks: %v", err)
	}
	_, err = r.ReadAt(make([]byte, 10), 2*MinBlockSize+95)
	var ce *CorruptError
	if !errors.Is(err, model.ErrCorrupt) || !errors.As(err, &ce) || ce.Offset != 2*MinBlockSize || !strings.Contains(err.Error(), "shard st-4/1") {
		t.Fatalf("read of the bad block = %v, want ErrCorrupt naming shard st-4/1 at offset %d", err, 2*MinBlockSize)
	}
	if err := s.VerifyShard(id); !errors.Is(err, model.ErrCorrupt) {
		t.Errorf("VerifyShard = %v, want ErrCorrupt", err)
	}
	// A repair with other bytes is refused; with the right ones it restores the shard.
	bad := bytes.Clone(data)
	bad[0] ^= 1
	if err := s.RepairShard(context.Background(), id, bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, model.ErrCorrupt) {
		t.Errorf("RepairShard with wrong bytes = %v, want ErrCorrupt", err)
	}
	if err := s.RepairShard(context.Background(), id, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyShard(id); err != nil {
		t.Errorf("VerifyShard after repair: %v", err)
	}
	if files := shardDirFiles(t, s); len(files) != 1 {
		t.Errorf("after repair the directory holds %v", files)
	}
}

func TestShardStartupCheck(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	keep := ShardID{Stripe: "st-5", Index: 0}
	lost := ShardID{Stripe: "st-5", Index: 1}
	short := ShardID{Stripe: "st-5", Index: 2}
	for i, id := range []ShardID{keep, lost, short} {
		putShard(t, s, id, randBytes(uint64(10+i), 2*MinBlockSize))
	}
	_ = s.Close()
	shards := filepath.Join(dir, "shards")
	if err := os.Remove(filepath.Join(shards, lost.fileName())); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(shards, short.fileName()), 100); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"st-5.3.shard.tmp-abcdef", "st-5.4.shard"} {
		if err := os.WriteFile(filepath.Join(shards, n), []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s = openStore(t, dir)
	rep := s.RecoveryReport()
	if len(rep.Segments) != 4 {
		t.Fatalf("startup check did %d things, want 4: %s", len(rep.Segments), rep)
	}
	list, _ := s.Shards()
	if len(list) != 1 || list[0].ID != keep {
		t.Errorf("after the check Shards() = %+v, want only %s", list, keep)
	}
	if files := shardDirFiles(t, s); len(files) != 1 || files[0] != keep.fileName() {
		t.Errorf("shard directory holds %v", files)
	}
	_ = s.Close()
	s = openStore(t, dir)
	if rep := s.RecoveryReport(); !rep.Clean() {
		t.Errorf("second reopen not clean: %s", rep)
	}
}

func FuzzDecodeShardMeta(f *testing.F) {
	f.Add(encodeShardMeta(shardMeta{size: 5000, blockSize: MinBlockSize, fileCRC: 7, blocks: []uint32{1, 2}}))
	f.Add(encodeShardMeta(shardMeta{size: 0, blockSize: MinBlockSize}))
	f.Add([]byte{1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeShardMeta(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeShardMeta(m), b) {
			t.Fatalf("decode/encode is not the identity for %x", b)
		}
	})
}

func TestShardIDValidate(t *testing.T) {
	for _, id := range []ShardID{{"", 0}, {"A", 0}, {"a/b", 0}, {".a", 0}, {"a", -1}, {"a", erasure.MaxShards}} {
		if err := id.Validate(); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%+v.Validate() = %v, want ErrInvalid", id, err)
		}
	}
	if k, err := parseShardKey(ShardID{"st.9_x", 63}.key()); err != nil || k != (ShardID{"st.9_x", 63}) {
		t.Errorf("key round trip = %+v, %v", k, err)
	}
}
