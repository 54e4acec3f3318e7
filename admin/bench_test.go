package admin

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// BenchmarkDurablePublish publishes with persisted acks (64 per write, each
// batch waited for) with /metrics scraped every second, ten times a second,
// or not at all: scraping reads atomics and must stay within noise of not
// scraping. One op is one message.
//
//	go test -run NONE -bench DurablePublish -benchtime 5s -count 3 ./admin/
func BenchmarkDurablePublish(b *testing.B) {
	for _, bc := range []struct {
		name  string
		every time.Duration
	}{{"scrape=off", 0}, {"scrape=1s", time.Second}, {"scrape=100ms", 100 * time.Millisecond}} {
		b.Run(bc.name, func(b *testing.B) {
			s := newServer(b, b.TempDir(), nil)
			l := newAdmin(b, Config{})
			l.SetServer(s)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			scrapes := 0
			if bc.every > 0 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					t := time.NewTicker(bc.every)
					defer t.Stop()
					for {
						select {
						case <-stop:
							return
						case <-t.C:
							if resp, err := http.Get("http://" + l.Addr().String() + "/metrics"); err == nil {
								resp.Body.Close()
								scrapes++
							}
						}
					}
				}()
			}
			p := dial(b, s, "bench")
			payload := make([]byte, 128)
			topic := []byte("bench")
			var batch []byte
			seq := uint64(0)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(64, b.N-done)
				batch = batch[:0]
				for i := 0; i < n; i++ {
					seq++
					batch = wire.AppendPublish(batch, seq, wire.AckPersisted, topic, payload)
				}
				p.send(batch)
				p.waitAck(seq)
				done += n
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(scrapes), "scrapes")
		})
	}
}
