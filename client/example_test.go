package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tandemhq/tandem/client"
)

// skipChooser is a ServerChooser that skips a server once it has failed N
// times in a row (a success resets its count) and gives up, stopping the
// HA client with ErrNoServer and Error(), when every server has.
type skipChooser struct {
	uris    []string
	n       int
	fails   map[string]int // consecutive failures per server
	cur     int
	lastErr error
	tried   []string // for the example's output
}

func newSkipChooser(n int, uris ...string) *skipChooser {
	return &skipChooser{uris: uris, n: n, fails: map[string]int{}}
}

// CurrentURI returns the first server from the current position that has
// not failed n times in a row, or "" when none is left.
func (c *skipChooser) CurrentURI() string {
	for i := range c.uris {
		j := (c.cur + i) % len(c.uris)
		if c.fails[c.uris[j]] < c.n {
			c.cur = j
			c.tried = append(c.tried, c.uris[j])
			return c.uris[j]
		}
	}
	return ""
}

func (c *skipChooser) CurrentAuthenticator() client.Authenticator { return nil }

func (c *skipChooser) ReportSuccess(uri string) { c.fails[uri] = 0 }

// ReportFailure counts the failure and moves on to the next server.
func (c *skipChooser) ReportFailure(uri string, err error) {
	c.fails[uri]++
	c.lastErr = err
	c.cur = (c.cur + 1) % len(c.uris)
}

func (c *skipChooser) Error() string {
	return fmt.Sprintf("every server failed %d times in a row (last: %v)", c.n, c.lastErr)
}

// ExampleServerChooser plugs a custom ServerChooser into the HA client: it
// skips a server after two consecutive failures. Both servers here refuse
// connections, so after two attempts at each the chooser gives up and
// Connect returns ErrNoServer with the chooser's Error.
func ExampleServerChooser() {
	ch := newSkipChooser(2, "127.0.0.1:1", "127.0.0.1:2") // nothing listens on ports 1 and 2
	h, err := client.NewHA(client.HAConfig{
		Name:    "example",
		Chooser: ch,
		Delay:   &client.FixedDelayStrategy{Delay: time.Millisecond},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	err = h.Connect(context.Background())
	fmt.Println("tried:", strings.Join(ch.tried, " "))
	fmt.Println("no server:", errors.Is(err, client.ErrNoServer))
	fmt.Println(strings.Contains(err.Error(), "every server failed 2 times in a row"))
	// Output:
	// tried: 127.0.0.1:1 127.0.0.1:2 127.0.0.1:1 127.0.0.1:2
	// no server: true
	// true
}
