package engine

import (
	"bytes"
	"fmt"
	"regexp"

	"github.com/tandemhq/tandem/wire"
)

// maxRegexCache bounds the per-subscription cache of regex verdicts; past
// it, verdicts are computed every time (a subscription over an unbounded set
// of topics must not grow without limit).
const maxRegexCache = 4096

// matcher decides whether a topic belongs to a subscription. Exact and
// prefix matching compare bytes; regular expressions (Go RE2 syntax,
// unanchored) are evaluated once per distinct topic and the verdict cached,
// so a topic first seen after the subscription began is matched like any
// other.
type matcher struct {
	kind  wire.MatchKind
	topic []byte
	re    *regexp.Regexp
	cache map[string]bool
}

func newMatcher(kind wire.MatchKind, topic []byte) (*matcher, error) {
	m := &matcher{kind: kind, topic: append([]byte(nil), topic...)}
	if kind == wire.MatchRegex {
		re, err := regexp.Compile(string(topic))
		if err != nil {
			return nil, fmt.Errorf("bad topic pattern %q: %v", topic, err)
		}
		m.re = re
		m.cache = make(map[string]bool)
	}
	return m, nil
}

func (m *matcher) match(topic []byte) bool {
	switch m.kind {
	case wire.MatchExact:
		return bytes.Equal(topic, m.topic)
	case wire.MatchPrefix:
		return bytes.HasPrefix(topic, m.topic)
	}
	if v, ok := m.cache[string(topic)]; ok {
		return v
	}
	v := m.re.Match(topic)
	if len(m.cache) < maxRegexCache {
		m.cache[string(topic)] = v
	}
	return v
}
