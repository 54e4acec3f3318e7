package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/record"
)

// storeRecords returns the offsets of the records of a store file.
func storeRecords(t *testing.T, b []byte) []int {
	t.Helper()
	var offs []int
	for off := 0; off < len(b); {
		offs = append(offs, off)
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if n < 8 || off+n > len(b) {
			t.Fatalf("bad store file at %d", off)
		}
		off += n
	}
	return offs
}

// flipAt flips a bit in the body of the record at off and returns the
// file's original bytes.
func flipAt(t *testing.T, path string, off int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := bytes.Clone(b)
	c[off+8+3] ^= 0x04
	if err := os.WriteFile(path, c, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPubStoreCorruptExitsAndRepairs(t *testing.T) {
	addr := startServer(t, "cli-store")
	path := filepath.Join(t.TempDir(), "pub.store")
	s, err := client.OpenFilePublishStore(path, client.SyncBatch, client.StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ { // unpersisted: a publisher that died
		s.Store(uint64(i), []byte("st"), []byte("message "+strconv.Itoa(i)))
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	b, _ := os.ReadFile(path)
	offs := storeRecords(t, b)
	third := offs[len(offs)-10+2] // after the header and persisted-up-to records
	damaged := flipAt(t, path, third)

	args := []string{"pub", "--servers", addr, "--topic", "st", "--name", "cli-store-pub", "--store", path}
	r := tandem(t, "", args...)
	if r.code != 1 || !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, fmt.Sprintf("offset %d", third)) {
		t.Fatalf("pub on a corrupt store: %+v; want exit 1 naming %s and offset %d", r, path, third)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, damaged) {
		t.Fatal("pub changed the corrupt store")
	}
	r = tandem(t, "", append(args, "--repair-store")...)
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("corrupt bytes at offset %d (between records with sequence 2 and 4)", third)) ||
		!strings.Contains(r.stderr, "9 unpersisted messages") {
		t.Fatalf("pub --repair-store: %+v", r)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "st", "--from", "epoch", "--count", "9")
	want := ""
	for _, i := range []int{1, 2, 4, 5, 6, 7, 8, 9, 10} {
		want += "message " + strconv.Itoa(i) + "\n"
	}
	if r.code != 0 || r.stdout != want {
		t.Fatalf("re-published after the repair: %+v", r)
	}
}

func TestSubBookmarkStoreCorruptExitsAndRepairs(t *testing.T) {
	addr := startServer(t, "cli-bstore")
	path := filepath.Join(t.TempDir(), "sub.bookmarks")
	s, err := client.OpenFileBookmarkStore(path, client.SyncBatch)
	if err != nil {
		t.Fatal(err)
	}
	s.SetPosition("s", nil)
	for i := uint64(1); i <= 5; i++ {
		s.Discard(&client.Message{SubName: "s", Origin: 1, OriginSeq: i, Bookmark: record.Bookmark{Publisher: 2, PubSeq: i}})
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	b, _ := os.ReadFile(path)
	offs := storeRecords(t, b)
	bad := offs[len(offs)-4]
	damaged := flipAt(t, path, bad)

	args := []string{"sub", "--servers", addr, "--topic", "bt", "--sub-id", "s", "--bookmark-store", path, "--from", "epoch", "--count", "1"}
	r := tandem(t, "", args...)
	if r.code != 1 || !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, fmt.Sprintf("offset %d", bad)) {
		t.Fatalf("sub on a corrupt bookmark store: %+v; want exit 1 naming %s and offset %d", r, path, bad)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, damaged) {
		t.Fatal("sub changed the corrupt store")
	}
	if r := tandem(t, "one\n", "pub", "--servers", addr, "--topic", "bt"); r.code != 0 {
		t.Fatalf("pub: %+v", r)
	}
	r = tandem(t, "", append(args, "--repair-store")...)
	if r.code != 0 || r.stdout != "one\n" || !strings.Contains(r.stderr, fmt.Sprintf("corrupt bytes at offset %d", bad)) {
		t.Fatalf("sub --repair-store: %+v", r)
	}
}
