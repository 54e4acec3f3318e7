package record

import (
	"errors"
	"testing"
)

// FuzzParseBookmark: ParseBookmark never panics, fails only with
// ErrBadBookmark, and what it accepts prints as text that parses back to
// the same bookmark.
func FuzzParseBookmark(f *testing.F) {
	for _, s := range []string{"a1b2c3d4e5f60718:42:1007", "0:0:0", "ffffffffffffffff:18446744073709551615:1", "", "::", "x:1:2", "1:2", "1:2:3:4", "1:-2:3", "10000000000000000:1:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBookmark(s)
		if err != nil {
			if !errors.Is(err, ErrBadBookmark) {
				t.Fatalf("ParseBookmark(%q): %v, not ErrBadBookmark", s, err)
			}
			return
		}
		again, err := ParseBookmark(b.String())
		if err != nil || again != b {
			t.Fatalf("ParseBookmark(%q) = %+v; its text %q parses to %+v, %v", s, b, b.String(), again, err)
		}
		if d, err := DecodeBookmark(b.AppendBinary(nil)); err != nil || d != b {
			t.Fatalf("binary round trip of %+v: %+v, %v", b, d, err)
		}
	})
}
