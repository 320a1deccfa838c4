package kek_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/kek"
)

func spec(id string, fill byte) string {
	return id + ":" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, kek.Size))
}

func TestSealOpenRotate(t *testing.T) {
	old, err := kek.Parse(spec("old", 1))
	if err != nil {
		t.Fatal(err)
	}
	id, sealed := old.Seal([]byte("row 1"), []byte("secret seed"))
	if id != "old" || bytes.Contains(sealed, []byte("secret seed")) {
		t.Fatalf("sealed under %q: %q", id, sealed)
	}
	rotated, err := kek.Parse(spec("new", 2) + "," + spec("old", 1))
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Current() != "new" || !strings.Contains(rotated.String(), "old") {
		t.Fatalf("current %s, %s", rotated.Current(), rotated)
	}
	if got, err := rotated.Open(id, []byte("row 1"), sealed); err != nil || string(got) != "secret seed" {
		t.Fatalf("open after rotation: %q %v", got, err)
	}
	if _, err := rotated.Open(id, []byte("row 2"), sealed); err == nil {
		t.Fatal("a ciphertext moved to another row decrypts")
	}
	if _, err := kek.Parse(spec("new", 2)); err != nil {
		t.Fatal(err)
	}
	newOnly, _ := kek.Parse(spec("new", 2))
	if _, err := newOnly.Open(id, []byte("row 1"), sealed); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("dropped KEK: %v", err)
	}
	if _, err := newOnly.Open("", nil, []byte("x")); !errors.Is(err, kek.ErrNotEncrypted) {
		t.Fatalf("clear: %v", err)
	}
}

func TestLoad(t *testing.T) {
	if _, err := kek.Load("", ""); !errors.Is(err, kek.ErrNone) {
		t.Fatalf("none: %v", err)
	}
	if _, err := kek.Load("k:c2hvcnQ=", ""); err == nil || strings.Contains(err.Error(), "c2hvcnQ") {
		t.Fatalf("short key: %v", err)
	}
	if _, err := kek.Load(spec("a", 1), "/x"); err == nil {
		t.Fatal("both accepted")
	}
}
