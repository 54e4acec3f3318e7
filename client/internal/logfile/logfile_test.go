package logfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
)

func build(bodies ...string) ([]byte, []int64) {
	var b []byte
	var offs []int64
	for _, body := range bodies {
		offs = append(offs, int64(len(b)))
		var start int
		b, start = Begin(b)
		b = append(b, body...)
		b = Finish(b, start)
	}
	return b, offs
}

func scan(t *testing.T, b []byte, repair bool) ([]string, Result, error) {
	t.Helper()
	var got []string
	res, err := Scan(bytes.NewReader(b), int64(len(b)), "f", 1<<10, repair, func(off int64, body []byte) error {
		got = append(got, string(body))
		return nil
	})
	return got, res, err
}

func TestScan(t *testing.T) {
	b, offs := build("one", "two", "three", "four")
	got, res, err := scan(t, b, false)
	if err != nil || !slices.Equal(got, []string{"one", "two", "three", "four"}) || res.End != int64(len(b)) || res.Torn.Bytes != 0 {
		t.Fatalf("clean: %v %+v %v", got, res, err)
	}

	// Torn: the last record cut, or its last byte flipped.
	for _, c := range [][]byte{b[:len(b)-2], append(slices.Clone(b[:len(b)-1]), b[len(b)-1]^1), b[:offs[3]+3]} {
		got, res, err := scan(t, c, false)
		if err != nil || !slices.Equal(got, []string{"one", "two", "three"}) || res.Torn != (Region{offs[3], int64(len(c)) - offs[3]}) || res.End != offs[3] {
			t.Fatalf("torn: %v %+v %v", got, res, err)
		}
	}

	// Corrupt: record two damaged, three and four intact after it.
	c := slices.Clone(b)
	c[offs[1]+HeaderSize] ^= 0x40
	_, _, err = scan(t, c, false)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || ce.Offset != offs[1] || ce.Next != offs[2] || ce.Path != "f" {
		t.Fatalf("corrupt: %v", err)
	}
	got, res, err = scan(t, c, true)
	if err != nil || !slices.Equal(got, []string{"one", "three", "four"}) || !slices.Equal(res.Skipped, []Region{{offs[1], offs[2] - offs[1]}}) {
		t.Fatalf("repair: %v %+v %v", got, res, err)
	}

	// A huge length in the middle is corruption, not an allocation.
	c = slices.Clone(b)
	c[offs[1]+3] = 0x7f
	if _, _, err := scan(t, c, false); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("huge length: %v", err)
	}

	// An error from fn names the offset.
	_, err = Scan(bytes.NewReader(b), int64(len(b)), "f", 1<<10, false, func(off int64, body []byte) error {
		if string(body) == "three" {
			return io.ErrUnexpectedEOF
		}
		return nil
	})
	if !errors.Is(err, io.ErrUnexpectedEOF) || err.Error() != fmt.Sprintf("f: record at offset %d: %v", offs[2], io.ErrUnexpectedEOF) {
		t.Fatalf("fn error: %v", err)
	}
}

// A failed append is cut off, so the next one does not follow a partial
// record.
func TestLogAppendFailureCutOff(t *testing.T) {
	fsys := NewMemFS()
	l, err := Replace(fsys, "/d/f", func(w io.Writer) error {
		b, _ := build("head")
		_, err := w.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	long, _ := build("a record much longer than the next one")
	rec, _ := build("next")
	fsys.Fail = func(op, _ string) error {
		if op == "write" {
			return errors.New("disk full")
		}
		return nil
	}
	if err := l.Append(long); err == nil {
		t.Fatal("append did not fail")
	}
	fsys.Fail = nil
	if err := l.Append(rec); err != nil {
		t.Fatal(err)
	}
	got, res, err := scan(t, fsys.Bytes("/d/f"), false)
	if err != nil || !slices.Equal(got, []string{"head", "next"}) || res.Torn.Bytes != 0 {
		t.Fatalf("after a failed append: %v %+v %v", got, res, err)
	}
	if n := fsys.Names(); !slices.Equal(n, []string{"/d/f"}) {
		t.Fatalf("files %v", n)
	}
}
