package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/vigie-vms/vigie/loadtest/sei"
	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// apiFake serves the public API's read side (timeline, segments, export.mp4) over HTTP for
// cameras that recorded every frame of the embedded H.264 clip, looped, with the SEI tag
// in front of each access unit: real, decodable video, so ffprobe can count it. Like the
// gateway, an export starts at the keyframe at or before its start.
type apiFake struct {
	clip     *simcam.Clip
	t0       time.Time
	fps      int
	frames   int // recorded per camera, frames 0..frames-1 at t0 + k/fps
	segLen   int // frames per listed segment
	pad      int // filler bytes added to each sample (bitrate)
	mu       sync.Mutex
	cache    map[string][]byte
	exports  int
	bytesOut int64
}

func newAPIFake(tb testing.TB, frames, segLen, pad int) *apiFake {
	clip, err := simcam.DefaultClip(simcam.CodecH264)
	if err != nil {
		tb.Fatal(err)
	}
	return &apiFake{clip: clip, t0: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC), fps: 25, frames: frames, segLen: segLen, pad: pad, cache: map[string][]byte{}}
}

func (f *apiFake) at(k int) time.Time {
	return f.t0.Add(time.Duration(k) * time.Second / time.Duration(f.fps))
}

func (f *apiFake) key(k int) bool {
	au := f.clip.AccessUnits[k%len(f.clip.AccessUnits)]
	for _, n := range au {
		if len(n) > 0 && n[0]&0x1f == 5 {
			return true
		}
	}
	return false
}

func (f *apiFake) sent() Sent { return Sent{Frame0: f.t0, FPS: f.fps, FramesSent: uint64(f.frames)} }

// frameAt returns the first frame at or after t.
func (f *apiFake) frameAt(t time.Time) int {
	if !t.After(f.t0) {
		return 0
	}
	k := int(t.Sub(f.t0) * time.Duration(f.fps) / time.Second)
	for k < f.frames && f.at(k).Before(t) {
		k++
	}
	return k
}

func (f *apiFake) export(cam string, from, to time.Time) ([]byte, time.Time) {
	a, b := f.frameAt(from), min(f.frameAt(to), f.frames)
	if a >= b {
		return nil, time.Time{}
	}
	for a > 0 && !f.key(a) {
		a--
	}
	ck := cam + from.String() + to.String()
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.cache[ck]; ok {
		return b, f.at(a)
	}
	tr := &pmp4.Track{ID: 1, TimeScale: 90000, Codec: &mp4.CodecH264{SPS: f.clip.SPS, PPS: f.clip.PPS}}
	filler := append([]byte{0x0c}, bytes.Repeat([]byte{0xff}, f.pad)...) // filler data NAL
	for k := a; k < b; k++ {
		var payload []byte
		nals := [][]byte{sei.EncodeH264(sei.Tag{Camera: cam, Frame: uint64(k), SentAt: f.at(k).Add(-20 * time.Millisecond)})}
		nals = append(nals, f.clip.AccessUnits[k%len(f.clip.AccessUnits)]...)
		if f.pad > 0 {
			nals = append(nals, filler)
		}
		for _, nal := range nals {
			payload = binary.BigEndian.AppendUint32(payload, uint32(len(nal)))
			payload = append(payload, nal...)
		}
		tr.Samples = append(tr.Samples, &pmp4.Sample{Duration: uint32(90000 / f.fps), PayloadSize: uint32(len(payload)), IsNonSyncSample: !f.key(k),
			GetPayload: func() ([]byte, error) { return payload, nil }})
	}
	var buf bytes.Buffer
	p := pmp4.Presentation{Tracks: []*pmp4.Track{tr}}
	if err := p.Marshal(&seekBuffer{b: &buf}); err != nil {
		panic(err)
	}
	f.cache[ck] = buf.Bytes()
	return buf.Bytes(), f.at(a)
}

func (f *apiFake) handler() http.Handler {
	mux := http.NewServeMux()
	end := f.at(f.frames)
	q := func(r *http.Request, k string) time.Time {
		t, _ := time.Parse(time.RFC3339Nano, r.URL.Query().Get(k))
		return t
	}
	js := func(w http.ResponseWriter, v any) { _ = json.NewEncoder(w).Encode(v) }
	mux.HandleFunc("GET /v1/cameras/{id}/timeline", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"spans": []map[string]any{{"start": f.t0, "end": end, "bytes": "1000"}}})
	})
	mux.HandleFunc("GET /v1/cameras/{id}/segments", func(w http.ResponseWriter, r *http.Request) {
		var segs []map[string]any
		for k := 0; k < f.frames; k += f.segLen {
			segs = append(segs, map[string]any{"id": r.PathValue("id") + "-" + strconv.Itoa(k), "node": "n1",
				"start": f.at(k), "end": f.at(min(k+f.segLen, f.frames)), "bytes": "1", "sealed": true})
		}
		js(w, map[string]any{"segments": segs})
	})
	mux.HandleFunc("GET /media/v1/cameras/{id}/export.mp4", func(w http.ResponseWriter, r *http.Request) {
		b, origin := f.export(r.PathValue("id"), q(r, "start"), q(r, "end"))
		if b == nil {
			http.Error(w, "nothing recorded", http.StatusNotFound)
			return
		}
		f.mu.Lock()
		f.exports++
		f.bytesOut += int64(len(b))
		f.mu.Unlock()
		w.Header().Set("X-Vigie-Start", origin.UTC().Format(time.RFC3339Nano))
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})
	return mux
}

func (f *apiFake) serve(tb testing.TB) *API {
	srv := httptest.NewServer(f.handler())
	tb.Cleanup(srv.Close)
	return &API{Base: srv.URL}
}
