package protect

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"

	"github.com/vigie-vms/vigie/model"
)

// testSegmentBytes builds a segment's bytes (init + n moof/mdat pairs) and the index the
// recorder would have written for it.
func testSegmentBytes(t testing.TB, n int, start time.Time) ([]byte, []model.FragmentInfo) {
	out := testInit(t)
	var frags []model.FragmentInfo
	for i := range n {
		video := &fmp4.PartTrack{ID: 2, BaseTime: 7777 + uint64(i*9000)}
		for j := range 3 {
			video.Samples = append(video.Samples, &fmp4.Sample{Duration: 3000, PTSOffset: 3000, IsNonSyncSample: j > 0 || i == 1, Payload: []byte{byte(i), byte(j), 1, 2}})
		}
		part := fmp4.Part{SequenceNumber: uint32(i + 1), Tracks: []*fmp4.PartTrack{video}}
		var buf seekablebuffer.Buffer
		if err := part.Marshal(&buf); err != nil {
			t.Fatal(err)
		}
		frags = append(frags, model.FragmentInfo{Offset: int64(len(out)), Size: int64(len(buf.Bytes())),
			Start: start.Add(time.Duration(i) * 100 * time.Millisecond), Duration: 100 * time.Millisecond, Keyframe: i != 1})
		out = append(out, buf.Bytes()...)
	}
	return out, frags
}

func TestRebuildIndex(t *testing.T) {
	b, want := testSegmentBytes(t, 4, t0)
	init, got, err := RebuildIndex(bytes.NewReader(b), int64(len(b)), t0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || !bytes.Equal(init, b[:want[0].Offset]) {
		t.Fatalf("index\n got %+v\nwant %+v", got, want)
	}
	// Damaged bytes are a format error, never a wrong index.
	for _, cut := range []int64{10, want[0].Offset, want[1].Offset + 5, int64(len(b)) - 3} {
		if _, _, err := RebuildIndex(bytes.NewReader(b[:cut]), cut, t0); !errors.Is(err, ErrFormat) {
			t.Errorf("truncated at %d: err = %v, want ErrFormat", cut, err)
		}
	}
}

func FuzzRebuildIndex(f *testing.F) {
	b, _ := testSegmentBytes(f, 3, t0)
	f.Add(b)
	rng := rand.New(rand.NewPCG(1, 1))
	for range 4 {
		c := append([]byte(nil), b...)
		c[rng.IntN(len(c))] ^= byte(rng.Uint32())
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		init, frags, err := RebuildIndex(bytes.NewReader(data), int64(len(data)), t0)
		if err != nil {
			return
		}
		end := int64(len(init))
		for _, fi := range frags {
			if fi.Offset != end || fi.Size <= 0 {
				t.Fatalf("fragments not contiguous: %+v after %d", fi, end)
			}
			end += fi.Size
		}
		if end != int64(len(data)) {
			t.Fatalf("index covers %d of %d bytes", end, len(data))
		}
	})
}
