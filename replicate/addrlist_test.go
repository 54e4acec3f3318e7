package replicate_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/replicate"
)

// TestParseDestinationAddressList: NAME=H1:P|H2:P names one instance
// reachable at either address (a shared-store instance that moved); the
// list keeps its order, round-trips through String, and a bad or repeated
// entry is refused naming it.
func TestParseDestinationAddressList(t *testing.T) {
	d, err := replicate.ParseDestination("B=10.0.0.1:7500|10.0.0.2:7500,async")
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "B" || d.Mode != replicate.Async || d.Addr != "10.0.0.1:7500|10.0.0.2:7500" ||
		!slices.Equal(d.Addrs(), []string{"10.0.0.1:7500", "10.0.0.2:7500"}) {
		t.Fatalf("parsed %+v", d)
	}
	d2, err := replicate.ParseDestination(d.String())
	if err != nil || !slices.Equal(d2.Addrs(), d.Addrs()) {
		t.Fatalf("round trip of %q: %+v, %v", d.String(), d2, err)
	}
	if d, err := replicate.ParseDestination("B=h:1"); err != nil || !slices.Equal(d.Addrs(), []string{"h:1"}) {
		t.Fatalf("one address: %+v, %v", d, err)
	}
	if d, err := replicate.ParseDestination("B"); err != nil || d.Addrs() != nil {
		t.Fatalf("accept-only: %+v, %v", d, err)
	}
	for in, want := range map[string]string{
		"B=h:1|nport":   `address "nport"`,
		"B=h:1|":        `address ""`,
		"B=h:1|h:1":     `address "h:1" listed twice`,
		"B=h:1|h:2|h:1": `address "h:1" listed twice`,
	} {
		_, err := replicate.ParseDestination(in)
		if !errors.Is(err, replicate.ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDestination(%q): %v, want ErrConfig mentioning %s", in, err, want)
		}
	}
}

// TestDialTriesAddressesInTurn: a destination listed as DEAD|LIVE (the
// first address refuses connections, like the passive of a shared-store
// pair) is reached at the second, and replication runs.
func TestDialTriesAddressesInTurn(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	b := startNode(t, "B", nodeOpts{}, "A")
	dead := freeAddr(t) // nothing listens there
	a := startNode(t, "A", nodeOpts{listen: "-"}, "B="+dead+"|"+b.repl+",sync")
	a.waitState(t, "B", "sync", 10*time.Second)
	plans := []pubPlan{{name: "al", to: a, n: 50}}
	want, origins := map[msgKey]msgBody{}, map[uint64]string{}
	expected(want, origins, plans[0], 50)
	publishAll(t, ctx, plans, nil)
	waitQuiet(t, 15*time.Second, map[*node]uint64{a: 50, b: 50}, a, b)
	checkExactly(t, b, want, origins)
}
