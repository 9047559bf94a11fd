package storage

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// SegmentReader reads one segment's verified bytes. It sees the fragments that were
// durable when it was opened (for an open segment, later appends are not visible: open a
// new reader). It is safe for concurrent use. Deleting the segment does not disturb an
// open reader.
type SegmentReader struct {
	seg   model.Segment
	f     *os.File
	init  []byte
	frags []fragRec
	infos []model.FragmentInfo
}

// OpenReader opens a segment for reading, open or sealed. It reads and verifies the init
// section; an init that fails its checksum is an error wrapping model.ErrCorrupt, an
// unknown segment wraps model.ErrNotFound.
func (s *Store) OpenReader(id model.SegmentID) (*SegmentReader, error) {
	k, err := parseSegmentID(id)
	if err != nil {
		return nil, fmt.Errorf("storage: open reader: %w", err)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	return s.openReader(k, id)
}

func (s *Store) openReader(k segKey, id model.SegmentID) (*SegmentReader, error) {
	s.mu.Lock()
	w := s.writers[id]
	s.mu.Unlock()

	r := &SegmentReader{}
	var m segMeta
	if w != nil {
		m = w.meta
		r.seg, r.frags = w.view()
		if r.seg.Sealed { // sealed between the two calls: fine, same fragments or more
			w = nil
		}
	}
	if w == nil {
		var err error
		if m, err = s.getMeta(k); err != nil {
			return nil, err
		}
		r.seg = s.lookup(k, m)
		entries, err := s.loadFrags(k)
		if err != nil {
			return nil, err
		}
		r.frags = make([]fragRec, len(entries))
		for i, e := range entries {
			r.frags[i] = e.rec
		}
	}
	// Fragments are in time order (Append enforces it); offsets grow with time.
	f, err := os.Open(s.segPath(k))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("storage: segment %s: file missing: %w", id, model.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: segment %s: open: %w", id, err)
	}
	r.f = f
	r.init = make([]byte, m.initLen)
	if err := r.readAt(r.init, 0); err != nil {
		_ = f.Close()
		return nil, err
	}
	if crc32c(r.init) != m.initCRC {
		_ = f.Close()
		return nil, fmt.Errorf("storage: segment %s: init section (offset 0, %d bytes) fails its checksum: %w", id, m.initLen, model.ErrCorrupt)
	}
	r.infos = make([]model.FragmentInfo, len(r.frags))
	for i, fr := range r.frags {
		r.infos[i] = fr.info()
	}
	return r, nil
}

func (r *SegmentReader) readAt(p []byte, off int64) error {
	n, err := r.f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("storage: segment %s: file ends before offset %d (%d bytes missing): %w", r.seg.ID, off+int64(len(p)), len(p)-n, model.ErrCorrupt)
	}
	return fmt.Errorf("storage: segment %s: read at offset %d: %w", r.seg.ID, off, err)
}

// Segment returns the segment as it was when the reader was opened.
func (r *SegmentReader) Segment() model.Segment { return r.seg }

// Init returns the verified init section (ftyp+moov). The caller must not modify it.
func (r *SegmentReader) Init() []byte { return r.init }

// Fragments returns the fragments the reader can serve, sorted by Start.
func (r *SegmentReader) Fragments() []model.FragmentInfo { return slices.Clone(r.infos) }

// FragmentAt returns the index in Fragments of the last fragment that starts at or before
// t (the one to start playback of t from), or -1 when every fragment starts after t.
// With keyframe set it returns the last such fragment that starts with a keyframe.
func (r *SegmentReader) FragmentAt(t time.Time, keyframe bool) int {
	i := sort.Search(len(r.infos), func(i int) bool { return r.infos[i].Start.After(t) }) - 1
	for keyframe && i >= 0 && !r.infos[i].Keyframe {
		i--
	}
	return i
}

// ReadFragment reads one fragment (as returned by Fragments) into dst[:0], growing it if
// needed, and returns it. Every byte is verified against the fragment's CRC-32C; a
// mismatch is an error wrapping model.ErrCorrupt that names the segment and offset, and no
// bytes are returned.
func (r *SegmentReader) ReadFragment(fi model.FragmentInfo, dst []byte) ([]byte, error) {
	i := sort.Search(len(r.frags), func(i int) bool { return r.frags[i].offset >= fi.Offset })
	if i == len(r.frags) || r.frags[i].offset != fi.Offset || r.frags[i].size != fi.Size {
		return dst[:0], fmt.Errorf("storage: segment %s: no fragment at offset %d of %d bytes: %w", r.seg.ID, fi.Offset, fi.Size, model.ErrNotFound)
	}
	fr := r.frags[i]
	var buf []byte
	if int64(cap(dst)) >= fr.size {
		buf = dst[:fr.size]
	} else {
		buf = make([]byte, fr.size)
	}
	if err := r.readAt(buf, fr.offset); err != nil {
		return dst[:0], err
	}
	if got := crc32c(buf); got != fr.crc {
		return dst[:0], fmt.Errorf("storage: segment %s: fragment at offset %d (%d bytes) fails its checksum (crc32c %08x, want %08x): %w",
			r.seg.ID, fr.offset, fr.size, got, fr.crc, model.ErrCorrupt)
	}
	return buf, nil
}

// Close closes the reader.
func (r *SegmentReader) Close() error { return r.f.Close() }

// Verify re-reads a sealed segment entirely and checks every block checksum and the
// whole-file checksum (the scrubber's check). It returns nil when every byte matches, an
// error wrapping model.ErrCorrupt naming the first bad block's offset otherwise. For an
// open segment it checks the init and every durable fragment instead.
func (s *Store) Verify(id model.SegmentID) error {
	k, err := parseSegmentID(id)
	if err != nil {
		return fmt.Errorf("storage: verify: %w", err)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	m, err := s.getMeta(k)
	if err != nil {
		return err
	}
	if !m.sealed {
		r, err := s.openReader(k, id)
		if err != nil {
			return err
		}
		defer r.Close()
		var buf []byte
		for _, fi := range r.infos {
			if buf, err = r.ReadFragment(fi, buf); err != nil {
				return err
			}
		}
		return nil
	}
	f, err := os.Open(s.segPath(k))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: segment %s: file missing: %w", id, model.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("storage: segment %s: open: %w", id, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("storage: segment %s: stat: %w", id, err)
	} else if st.Size() != m.bytes {
		return fmt.Errorf("storage: segment %s: file is %d bytes, sealed as %d: %w", id, st.Size(), m.bytes, model.ErrCorrupt)
	}
	block := make([]byte, m.blockSize)
	var whole uint32
	for i, want := range m.blocks {
		off := int64(i) * m.blockSize
		n := min(m.blockSize, m.bytes-off)
		if _, err := f.ReadAt(block[:n], off); err != nil {
			return fmt.Errorf("storage: segment %s: read block at offset %d: %w", id, off, err)
		}
		if crc32c(block[:n]) != want {
			return fmt.Errorf("storage: segment %s: block %d (offset %d, %d bytes) fails its checksum: %w", id, i, off, n, model.ErrCorrupt)
		}
		whole = crc32.Update(whole, castagnoli, block[:n])
	}
	if whole != m.fileCRC {
		return fmt.Errorf("storage: segment %s: whole-file checksum mismatch: %w", id, model.ErrCorrupt)
	}
	return nil
}
