package journal

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
)

type timingFS struct {
	FS
	mu sync.Mutex
	d  map[string]time.Duration
	n  map[string]int
}

type timingFile struct {
	File
	fs   *timingFS
	kind string
}

func (t *timingFS) add(op string, d time.Duration) {
	t.mu.Lock()
	t.d[op] += d
	t.n[op]++
	t.mu.Unlock()
}
func (t *timingFS) Create(name string) (File, error) {
	f, err := t.FS.Create(name)
	if err != nil {
		return nil, err
	}
	k := "seg"
	if strings.HasSuffix(name, ".tmp") {
		k = "tmp"
	}
	return &timingFile{f, t, k}, nil
}
func (f *timingFile) WriteAt(p []byte, off int64) (int, error) {
	s := time.Now()
	n, err := f.File.WriteAt(p, off)
	f.fs.add(f.kind+"-write", time.Since(s))
	return n, err
}
func (f *timingFile) SyncData() error {
	s := time.Now()
	err := f.File.SyncData()
	f.fs.add(f.kind+"-sync", time.Since(s))
	f.kind = "seg"
	return err
}

func TestZZTiming(t *testing.T) {
	tfs := &timingFS{FS: OSFS{}, d: map[string]time.Duration{}, n: map[string]int{}}
	j := mustOpen(t, Options{Dir: t.TempDir(), FS: tfs, Logger: quietLogger(), SegmentSize: 1500 << 20})
	eventually(t, "prealloc", func() bool { tfs.mu.Lock(); defer tfs.mu.Unlock(); return tfs.n["tmp-sync"] == 2 })
	tfs.mu.Lock()
	clear(tfs.d)
	clear(tfs.n)
	tfs.mu.Unlock()
	payload := make([]byte, 128)
	start := time.Now()
	const N = 5000000
	for i := 0; i < N; i++ {
		var h record.Header
		j.Append(&h, []byte("bench/topic"), payload)
	}
	j.WaitSynced(context.Background(), N)
	el := time.Since(start)
	st := j.Stats()
	j.Close()
	t.Logf("%v  %.0f rec/s syncs %d", el, N/el.Seconds(), st.Syncs)
	for k, d := range tfs.d {
		t.Logf("%s: %d ops, total %v, avg %v", k, tfs.n[k], d, d/time.Duration(tfs.n[k]))
	}
}
